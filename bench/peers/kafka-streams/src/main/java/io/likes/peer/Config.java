package io.likes.peer;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * The peer's settings: from the environment (the same names as the Rust
 * services where they mean the same thing), each overridable by a
 * {@code --name=value} argument.
 */
record Config(
        String bootstrap,
        String topic,
        String registryUrl,
        String applicationId,
        Path stateDir,
        long dedupHorizonMs,
        int threads,
        long commitIntervalMs,
        long outputIntervalMs) {

    /**
     * DEDUP_HORIZON_SECONDS's default, the same as
     * likes_infra::settings::DEFAULT_DEDUP_HORIZON_SECONDS.
     */
    static final long DEFAULT_DEDUP_HORIZON_SECONDS = 3600;

    /** The output topic of a peer reading {@code topic}. */
    String outputTopic() {
        return topic + ".peer-counts";
    }

    static Config from(String[] args, Map<String, String> env) {
        Map<String, String> given = new HashMap<>();
        for (String arg : args) {
            if (!arg.startsWith("--") || !arg.contains("=")) {
                throw new IllegalArgumentException("arguments are --name=value, got: " + arg);
            }
            int eq = arg.indexOf('=');
            given.put(arg.substring(2, eq), arg.substring(eq + 1));
        }
        Lookup look = new Lookup(given, env);
        Config config = new Config(
                look.get("bootstrap", "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                look.get("topic", "KAFKA_TOPIC", "like-events"),
                look.get("registry", "SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7"),
                look.get("application-id", "PEER_APPLICATION_ID", "likes-peer-kafka-streams"),
                Path.of(look.get("state-dir", "PEER_STATE_DIR", null)),
                Math.multiplyExact(
                        look.number("dedup-horizon-seconds", "DEDUP_HORIZON_SECONDS",
                                DEFAULT_DEDUP_HORIZON_SECONDS),
                        1000L),
                (int) look.number("threads", "PEER_THREADS", 1),
                look.number("commit-interval-ms", "PEER_COMMIT_INTERVAL_MS", 1000),
                look.number("output-interval-ms", "PEER_OUTPUT_INTERVAL_MS", 1000));
        if (!given.keySet().stream().allMatch(Lookup.KNOWN::contains)) {
            throw new IllegalArgumentException("unknown argument among " + given.keySet()
                    + "; known: " + Lookup.KNOWN);
        }
        if (config.threads < 1 || config.commitIntervalMs < 1 || config.outputIntervalMs < 0
                || config.dedupHorizonMs < 0) {
            throw new IllegalArgumentException("threads and commit-interval-ms must be positive, "
                    + "output-interval-ms and dedup-horizon-seconds not negative");
        }
        return config;
    }

    private record Lookup(Map<String, String> args, Map<String, String> env) {
        static final java.util.Set<String> KNOWN = java.util.Set.of(
                "bootstrap", "topic", "registry", "application-id", "state-dir",
                "dedup-horizon-seconds", "threads", "commit-interval-ms", "output-interval-ms");

        String get(String arg, String var, String fallback) {
            String value = args.getOrDefault(arg, env.get(var));
            if (value == null || value.isEmpty()) {
                if (fallback == null) {
                    throw new IllegalArgumentException("--" + arg + " (or " + var + ") is required");
                }
                return fallback;
            }
            return value;
        }

        long number(String arg, String var, long fallback) {
            String value = get(arg, var, Long.toString(fallback));
            try {
                return Long.parseLong(value.trim());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--" + arg + " (or " + var + "): not a number: " + value);
            }
        }
    }
}
