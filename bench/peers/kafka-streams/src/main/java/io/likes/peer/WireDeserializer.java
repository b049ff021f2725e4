package io.likes.peer;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.util.HashMap;
import java.util.Map;
import java.util.UUID;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.serialization.Deserializer;

/**
 * Reads a {@code like-events} record in the Confluent wire format by hand: a
 * zero magic byte, the writer schema's id (4 bytes, big-endian), then the Avro
 * binary body, read with the writer schema from the registry resolved against
 * the reader schema {@code like_event.avsc} (the repository's schemas/, bundled
 * in the jar). Validation is likes_domain's (domain/src/ids.rs): positive user
 * and item ids, item type 1 to 32767, a non-nil UUID event id.
 *
 * <p>Never throws: anything that cannot be an event is {@link Decoded#poison}.
 * Shared by every stream thread, so the per-id readers are per thread.
 */
final class WireDeserializer implements Deserializer<Decoded> {
    private static final int MAX_ITEM_TYPE = Short.MAX_VALUE;
    private static final UUID NIL = new UUID(0, 0);

    private final Registry registry;
    private final Schema reader;
    private final ThreadLocal<Map<Integer, GenericDatumReader<GenericRecord>>> readers =
            ThreadLocal.withInitial(HashMap::new);
    private final ThreadLocal<BinaryDecoder> decoders = new ThreadLocal<>();
    private final ThreadLocal<GenericRecord> reuse = new ThreadLocal<>();

    WireDeserializer(Registry registry) {
        this.registry = registry;
        this.reader = readerSchema();
    }

    static Schema readerSchema() {
        try (InputStream in = WireDeserializer.class.getResourceAsStream("/like_event.avsc")) {
            if (in == null) {
                throw new IllegalStateException("like_event.avsc is not in the jar");
            }
            return new Schema.Parser().parse(in);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read like_event.avsc", e);
        }
    }

    @Override
    public Decoded deserialize(String topic, byte[] bytes) {
        if (bytes == null) {
            return Decoded.poison("no value");
        }
        if (bytes.length < 5 || bytes[0] != 0) {
            return Decoded.poison("not in the confluent wire format");
        }
        int id = ByteBuffer.wrap(bytes, 1, 4).getInt();
        GenericDatumReader<GenericRecord> datumReader = readers.get().get(id);
        if (datumReader == null) {
            var writer = registry.schema(id);
            if (writer.isEmpty()) {
                return Decoded.poison("schema id " + id + " unknown to the registry or not avro");
            }
            try {
                datumReader = new GenericDatumReader<>(writer.get(), reader);
            } catch (AvroRuntimeException e) {
                return Decoded.poison("schema id " + id + " cannot be read as like_event: " + e.getMessage());
            }
            readers.get().put(id, datumReader);
        }
        GenericRecord record;
        try {
            BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(bytes, 5, bytes.length - 5, decoders.get());
            decoders.set(decoder);
            record = datumReader.read(reuse.get(), decoder);
            reuse.set(record);
        } catch (IOException | RuntimeException e) {
            return Decoded.poison("malformed avro body (schema " + id + "): " + e);
        }
        return validate(record);
    }

    private static Decoded validate(GenericRecord record) {
        UUID eventId;
        try {
            eventId = UUID.fromString(String.valueOf(record.get("event_id")));
        } catch (IllegalArgumentException e) {
            return Decoded.poison("event_id: must be a UUID");
        }
        if (eventId.equals(NIL)) {
            return Decoded.poison("event_id: must not be the nil UUID");
        }
        long userId = (Long) record.get("user_id");
        long itemId = (Long) record.get("item_id");
        int itemType = (Integer) record.get("item_type");
        String action = String.valueOf(record.get("action"));
        if (userId <= 0) {
            return Decoded.poison("user_id: must be a positive integer");
        }
        if (itemId <= 0) {
            return Decoded.poison("item_id: must be a positive integer");
        }
        if (itemType < 1 || itemType > MAX_ITEM_TYPE) {
            return Decoded.poison("item_type: must be an integer from 1 to " + MAX_ITEM_TYPE);
        }
        boolean like;
        switch (action) {
            case "LIKE" -> like = true;
            case "UNLIKE" -> like = false;
            default -> {
                return Decoded.poison("action: must be LIKE or UNLIKE");
            }
        }
        long timestamp = (Long) record.get("timestamp");
        return Decoded.of(new Decoded.LikeEvent(eventId.toString(), userId, itemType, itemId, like, timestamp));
    }
}
