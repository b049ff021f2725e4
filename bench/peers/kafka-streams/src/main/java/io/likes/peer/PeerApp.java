package io.likes.peer;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.Stores;
import sun.misc.Signal;

/**
 * The Kafka Streams peer of likes-projector: reads the like-events topic,
 * keeps each user x item like state and each item's net count with the
 * projector's rules ({@link LikeCounter}), exactly once, and writes per-item
 * counts to {@code <topic>.peer-counts}.
 *
 * <p>Prints {@code peer running} once every task is assigned and restored,
 * and a {@code peer stopped ...} line with its totals when it stops
 * (SIGTERM or SIGINT: exit 0; a failed stream thread: exit 1).
 */
public final class PeerApp {
    private PeerApp() {}

    public static void main(String[] args) throws Exception {
        Config config;
        try {
            config = Config.from(args, System.getenv());
        } catch (IllegalArgumentException e) {
            System.err.println("likes-peer: " + e.getMessage());
            System.exit(2);
            return;
        }
        int partitions = ensureOutputTopic(config);
        KafkaStreams streams = new KafkaStreams(topology(config), properties(config));
        CountDownLatch stop = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING) {
                System.out.println("peer running: " + partitions + " partitions of " + config.topic());
            } else if (now == KafkaStreams.State.ERROR) {
                System.out.println("peer failed");
                stop.countDown();
            }
        });
        // SIGTERM and SIGINT are a clean stop (exit 0), not the JVM's 143.
        for (String name : List.of("TERM", "INT")) {
            Signal.handle(new Signal(name), signal -> stop.countDown());
        }
        streams.start();
        stop.await();
        boolean failed = streams.state() == KafkaStreams.State.ERROR;
        // Leaving the group at once lets the next run (or a clean-up) take
        // the partitions without waiting for the session to time out.
        streams.close(new KafkaStreams.CloseOptions().leaveGroup(true).timeout(Duration.ofSeconds(20)));
        System.out.println("peer stopped: events " + LikeCounter.EVENTS.get()
                + " duplicates " + LikeCounter.DUPLICATES.get()
                + " unchanged " + LikeCounter.UNCHANGED.get()
                + " poison " + LikeCounter.POISON.get()
                + " outputs " + LikeCounter.OUTPUTS.get());
        System.out.flush();
        System.exit(failed ? 1 : 0);
    }

    /**
     * The topology. Every store is a RocksDB store with a changelog (logging
     * is on by default). {@code counts} and {@code pending} (one key per item,
     * hot items written many times per commit interval) have Kafka Streams'
     * record cache in front, flushed at each commit, so a hot item reaches
     * RocksDB and its changelog once per commit, as the projector's batch fold
     * writes it once; the per-event and per-pair stores, whose keys rarely
     * repeat within a commit, go straight to RocksDB (a cache would only add
     * evictions).
     */
    static Topology topology(Config config) {
        Registry registry = new Registry(config.registryUrl());
        Topology topology = new Topology();
        topology.addSource("events", Serdes.String().deserializer(), new WireDeserializer(registry), config.topic());
        topology.addProcessor("count",
                () -> new LikeCounter(config.dedupHorizonMs(), config.outputIntervalMs()), "events");
        for (String name : List.of(LikeCounter.COUNTS, LikeCounter.PENDING)) {
            topology.addStateStore(Stores.keyValueStoreBuilder(
                    Stores.persistentKeyValueStore(name), Serdes.String(), Serdes.Long())
                    .withCachingEnabled(), "count");
        }
        for (String name : List.of(LikeCounter.LIKES, LikeCounter.APPLIED)) {
            topology.addStateStore(Stores.keyValueStoreBuilder(
                    Stores.persistentKeyValueStore(name), Serdes.String(), Serdes.Long()), "count");
        }
        topology.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(LikeCounter.APPLIED_ORDER), Serdes.Bytes(), Serdes.ByteArray()), "count");
        topology.addSink("peer-counts", config.outputTopic(),
                Serdes.String().serializer(), Serdes.String().serializer(), "count");
        return topology;
    }

    static Properties properties(Config config) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, config.applicationId());
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, config.bootstrap());
        p.put(StreamsConfig.STATE_DIR_CONFIG, config.stateDir().toString());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, config.commitIntervalMs());
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, config.threads());
        p.put(StreamsConfig.DEFAULT_TIMESTAMP_EXTRACTOR_CLASS_CONFIG, RecordTime.class);
        p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedRocksDb.class);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // Static membership (one peer instance per application id; Kafka Streams
        // suffixes each thread): close(leaveGroup) only removes static members in
        // 4.1, and a clean stop should leave the group free at once.
        p.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), config.applicationId());
        return p;
    }

    /** Creates the output topic with the input's partition count when missing; returns that count. */
    static int ensureOutputTopic(Config config) throws InterruptedException, ExecutionException {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, config.bootstrap()))) {
            int partitions = admin.describeTopics(List.of(config.topic())).allTopicNames().get()
                    .get(config.topic()).partitions().size();
            try {
                admin.createTopics(List.of(new NewTopic(config.outputTopic(), Optional.of(partitions), Optional.empty())))
                        .all().get();
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
            }
            return partitions;
        }
    }
}
