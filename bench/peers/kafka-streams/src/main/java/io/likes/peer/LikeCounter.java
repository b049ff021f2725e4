package io.likes.peer;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The projector's counting rules, one event at a time, in one task per input
 * partition (the topic is keyed by item, so every event of an item, hence of
 * every user x item pair of it, is in that partition: no repartition).
 *
 * <ul>
 *   <li><b>Dedup</b> (domain/src/dedup.rs): an event is identified by
 *   (item, event id); it is a duplicate iff the same key was applied at a log
 *   time no more than the horizon before this record's log time, where log time
 *   is the newest record time seen in the partition (Kafka Streams' stream time
 *   of the task, which is exactly that, kept across restarts in the committed
 *   offsets). A duplicate changes nothing and does not refresh the memory.
 *   Memories older than the horizon are pruned in log-time order by a
 *   punctuator, as {@code DedupWindow} forgets them.</li>
 *   <li><b>Transitions</b> (domain/src/state.rs {@code LikeState::apply}, the
 *   rule domain/src/fold.rs folds per batch): a like of a not-liked pair is +1,
 *   an unlike of a liked pair is -1; a like of a liked pair and an unlike of a
 *   not-liked pair change nothing.</li>
 * </ul>
 *
 * <p>Output: each item whose count changed is written to the output topic once
 * per output interval (key {@code item_type:item_id}, value the count as
 * decimal text, header {@value #APPEND_HEADER} the timestamp of the oldest input
 * record not yet reflected in an output), like the projector's one Redis write
 * per item per batch. The items waiting for output are a store of their own, so
 * the exactly-once transaction that commits a count change also commits that it
 * is owed to the output.
 */
final class LikeCounter implements Processor<String, Decoded, String, String> {
    static final String LIKES = "likes";
    static final String COUNTS = "counts";
    static final String APPLIED = "applied";
    static final String APPLIED_ORDER = "applied-order";
    static final String PENDING = "pending";
    static final String APPEND_HEADER = "likes-append-ms";

    /** How many memories one prune forgets at most (the rest at the next). */
    private static final int PRUNE_BATCH = 100_000;

    private static final Logger LOG = LoggerFactory.getLogger(LikeCounter.class);

    static final AtomicLong EVENTS = new AtomicLong();
    static final AtomicLong DUPLICATES = new AtomicLong();
    static final AtomicLong UNCHANGED = new AtomicLong();
    static final AtomicLong POISON = new AtomicLong();
    static final AtomicLong OUTPUTS = new AtomicLong();

    private final long horizonMs;
    private final long outputIntervalMs;

    private ProcessorContext<String, String> context;
    private KeyValueStore<String, Long> likes;
    private KeyValueStore<String, Long> counts;
    private KeyValueStore<String, Long> applied;
    private KeyValueStore<Bytes, byte[]> appliedOrder;
    private KeyValueStore<String, Long> pending;

    LikeCounter(long horizonMs, long outputIntervalMs) {
        this.horizonMs = horizonMs;
        this.outputIntervalMs = outputIntervalMs;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
        this.context = context;
        likes = context.getStateStore(LIKES);
        counts = context.getStateStore(COUNTS);
        applied = context.getStateStore(APPLIED);
        appliedOrder = context.getStateStore(APPLIED_ORDER);
        pending = context.getStateStore(PENDING);
        if (outputIntervalMs > 0) {
            context.schedule(Duration.ofMillis(outputIntervalMs), PunctuationType.WALL_CLOCK_TIME, now -> flush());
        }
        long pruneEvery = Math.max(1_000, Math.min(60_000, horizonMs / 10));
        context.schedule(Duration.ofMillis(pruneEvery), PunctuationType.WALL_CLOCK_TIME, now -> prune());
    }

    @Override
    public void process(Record<String, Decoded> record) {
        Decoded decoded = record.value();
        if (decoded == null || decoded.isPoison()) {
            long total = POISON.incrementAndGet();
            String where = context.recordMetadata()
                    .map(m -> m.topic() + "/" + m.partition() + "@" + m.offset())
                    .orElse("?");
            LOG.warn("poison record skipped at {}: {} (poison so far: {})", where,
                    decoded == null ? "no value" : decoded.poison(), total);
            return;
        }
        EVENTS.incrementAndGet();
        Decoded.LikeEvent event = decoded.event();
        String item = event.item();
        // The partition's log time at this record (LogClock::tick).
        long at = Math.max(context.currentStreamTimeMs(), record.timestamp());
        String dedupKey = item + "/" + event.eventId();
        Long appliedAt = applied.get(dedupKey);
        if (appliedAt != null && at - appliedAt <= horizonMs) {
            DUPLICATES.incrementAndGet();
            return;
        }
        applied.put(dedupKey, at);
        appliedOrder.put(orderKey(at, dedupKey), new byte[0]);

        String pair = event.userId() + "@" + item;
        boolean liked = likes.get(pair) != null;
        long delta;
        if (event.like() && !liked) {
            likes.put(pair, 1L);
            delta = 1;
        } else if (!event.like() && liked) {
            likes.delete(pair);
            delta = -1;
        } else {
            UNCHANGED.incrementAndGet();
            return;
        }
        Long before = counts.get(item);
        long count = (before == null ? 0 : before) + delta;
        counts.put(item, count);
        if (outputIntervalMs == 0) {
            emit(item, count, record.timestamp());
        } else if (pending.get(item) == null) {
            pending.put(item, record.timestamp());
        }
    }

    /** Writes every item owed to the output, with its count now. */
    private void flush() {
        List<KeyValue<String, Long>> owed = new ArrayList<>();
        try (KeyValueIterator<String, Long> all = pending.all()) {
            all.forEachRemaining(owed::add);
        }
        for (KeyValue<String, Long> entry : owed) {
            Long count = counts.get(entry.key);
            emit(entry.key, count == null ? 0 : count, entry.value);
            pending.delete(entry.key);
        }
    }

    private void emit(String item, long count, long appendMs) {
        RecordHeaders headers = new RecordHeaders();
        headers.add(APPEND_HEADER, Long.toString(appendMs).getBytes(StandardCharsets.UTF_8));
        context.forward(new Record<>(item, Long.toString(count), context.currentSystemTimeMs(), headers));
        OUTPUTS.incrementAndGet();
    }

    /**
     * Forgets applied events the partition's log time passed by more than the
     * horizon (DedupHorizon::oldest_that_matters): they can never decide again.
     */
    private void prune() {
        long logTime = context.currentStreamTimeMs();
        if (logTime < 0) {
            return;
        }
        long oldest = logTime - horizonMs;
        List<KeyValue<Bytes, byte[]>> old = new ArrayList<>();
        try (KeyValueIterator<Bytes, byte[]> byTime = appliedOrder.all()) {
            while (byTime.hasNext() && old.size() < PRUNE_BATCH) {
                KeyValue<Bytes, byte[]> entry = byTime.next();
                if (timeOf(entry.key) >= oldest) {
                    break;
                }
                old.add(entry);
            }
        }
        for (KeyValue<Bytes, byte[]> entry : old) {
            long at = timeOf(entry.key);
            String dedupKey = keyOf(entry.key);
            // Only the memory this entry made (DedupMemory::forget): a later
            // application of the same id is newer and stays.
            Long appliedAt = applied.get(dedupKey);
            if (appliedAt != null && appliedAt == at) {
                applied.delete(dedupKey);
            }
            appliedOrder.delete(entry.key);
        }
    }

    /** Big-endian time first, so the store's byte order is log-time order (times are not negative). */
    private static Bytes orderKey(long at, String dedupKey) {
        byte[] key = dedupKey.getBytes(StandardCharsets.UTF_8);
        return Bytes.wrap(ByteBuffer.allocate(8 + key.length).putLong(Math.max(at, 0)).put(key).array());
    }

    private static long timeOf(Bytes orderKey) {
        return ByteBuffer.wrap(orderKey.get(), 0, 8).getLong();
    }

    private static String keyOf(Bytes orderKey) {
        byte[] bytes = orderKey.get();
        return new String(bytes, 8, bytes.length - 8, StandardCharsets.UTF_8);
    }
}
