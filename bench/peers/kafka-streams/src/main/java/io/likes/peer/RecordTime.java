package io.likes.peer;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * A record's time for dedup, as domain/src/dedup.rs {@code record_time}: the
 * Kafka timestamp when the record has one, else the event's own time. A
 * poison record without either keeps the partition's time (a negative time
 * would make Kafka Streams drop it before it is counted as poison).
 */
public final class RecordTime implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
        if (record.timestamp() >= 0) {
            return record.timestamp();
        }
        if (record.value() instanceof Decoded decoded && !decoded.isPoison()) {
            return decoded.event().timestampMs();
        }
        return Math.max(partitionTime, 0);
    }
}
