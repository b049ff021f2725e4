// A small Kafka admin helper for dev/stack, run from source with the cached broker jars
// (`java -cp '.stack/dist/kafka-*/libs/*' dev/lib/KafkaAdmin.java ...`): the Maven
// classpath of the broker has the admin client but not the kafka-tools CLI. Bootstrap
// servers come from KAFKA_BOOTSTRAP_SERVERS.
//
//   cluster                               the brokers that are up
//   create-topic <name> <partitions> <rf>  create (or keep) a topic; min.insync.replicas is the brokers' default
//   describe-topic <name>                  partitions, leaders, replicas, ISR and the durability settings
//   delete-topic <name>
//   end-offsets <name>                     the sum of the partitions' end offsets (records written)
//   produce <name> <count>                 idempotent, acks=all; prints how many were acknowledged
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;

public class KafkaAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length == 0) usage();
        String bootstrap = System.getenv().getOrDefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(props)) {
            switch (args[0]) {
                case "cluster" -> cluster(admin);
                case "create-topic" -> {
                    if (args.length != 4) usage();
                    createTopic(admin, args[1], Integer.parseInt(args[2]), Short.parseShort(args[3]));
                }
                case "describe-topic" -> {
                    if (args.length != 2) usage();
                    describeTopic(admin, args[1]);
                }
                case "delete-topic" -> {
                    if (args.length != 2) usage();
                    admin.deleteTopics(List.of(args[1])).all().get();
                    System.out.println("deleted " + args[1]);
                }
                case "end-offsets" -> {
                    if (args.length != 2) usage();
                    endOffsets(admin, args[1]);
                }
                case "produce" -> {
                    if (args.length != 3) usage();
                    produce(bootstrap, args[1], Integer.parseInt(args[2]));
                }
                default -> usage();
            }
        } catch (ExecutionException e) {
            System.err.println("error: " + e.getCause());
            System.exit(1);
        }
    }

    static void usage() {
        System.err.println("usage: KafkaAdmin cluster | create-topic <name> <partitions> <rf> | describe-topic <name> | delete-topic <name> | end-offsets <name> | produce <name> <count>");
        System.exit(2);
    }

    static void cluster(Admin admin) throws Exception {
        DescribeClusterResult c = admin.describeCluster();
        List<Node> nodes = c.nodes().get().stream().sorted((a, b) -> a.id() - b.id()).toList();
        System.out.println("cluster id: " + c.clusterId().get());
        System.out.println("brokers: " + nodes.size());
        for (Node n : nodes) System.out.println("  broker " + n.id() + " at " + n.host() + ":" + n.port());
    }

    static void createTopic(Admin admin, String name, int partitions, short rf) throws Exception {
        try {
            admin.createTopics(List.of(new NewTopic(name, partitions, rf))).all().get();
            System.out.println("created " + name + " (" + partitions + " partitions, replication " + rf + ")");
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) throw e;
            System.out.println(name + " exists");
        }
    }

    static void describeTopic(Admin admin, String name) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(name)).allTopicNames().get().get(name);
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, name);
        Config config = admin.describeConfigs(List.of(res)).all().get().get(res);
        int rf = d.partitions().get(0).replicas().size();
        System.out.println("topic " + name + ": partitions " + d.partitions().size() + ", replication " + rf
                + ", min.insync.replicas " + config.get("min.insync.replicas").value()
                + ", unclean.leader.election.enable " + config.get("unclean.leader.election.enable").value());
        for (TopicPartitionInfo p : d.partitions()) {
            System.out.println("  partition " + p.partition()
                    + " leader " + (p.leader() == null ? "none" : p.leader().id())
                    + " replicas " + ids(p.replicas())
                    + " isr " + ids(p.isr()));
        }
    }

    static void endOffsets(Admin admin, String name) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(name)).allTopicNames().get().get(name);
        Map<org.apache.kafka.common.TopicPartition, org.apache.kafka.clients.admin.OffsetSpec> ask = new java.util.HashMap<>();
        for (TopicPartitionInfo p : d.partitions()) {
            ask.put(new org.apache.kafka.common.TopicPartition(name, p.partition()), org.apache.kafka.clients.admin.OffsetSpec.latest());
        }
        long sum = 0;
        for (var e : admin.listOffsets(ask).all().get().values()) sum += e.offset();
        System.out.println("topic " + name + ": end offsets sum " + sum);
    }

    static void produce(String bootstrap, String topic, int count) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "15000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        java.util.concurrent.atomic.AtomicInteger acked = new java.util.concurrent.atomic.AtomicInteger();
        java.util.Map<String, Integer> errors = new java.util.concurrent.ConcurrentHashMap<>();
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        List<java.util.concurrent.Future<?>> sent = new java.util.ArrayList<>();
        for (int i = 0; i < count; i++) {
            sent.add(producer.send(new ProducerRecord<>(topic, "key-" + i, "value-" + i), (md, e) -> {
                if (e == null) acked.incrementAndGet();
                else errors.merge(e.getClass().getSimpleName(), 1, Integer::sum);
            }));
        }
        // flush() may wait for ever on a request a broker without its quorum never answers:
        // wait at most 30 s, then abandon what is not acknowledged.
        long deadline = System.nanoTime() + 30_000_000_000L;
        int unanswered = 0;
        for (java.util.concurrent.Future<?> f : sent) {
            try {
                f.get(Math.max(0, deadline - System.nanoTime()), java.util.concurrent.TimeUnit.NANOSECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                unanswered++;
            } catch (ExecutionException e) {
                // counted by the callback
            }
        }
        producer.close(java.time.Duration.ZERO);
        System.out.println("produced " + count + " to " + topic + ": acknowledged " + acked.get()
                + (errors.isEmpty() ? "" : ", failed " + errors)
                + (unanswered == 0 ? "" : ", unanswered after 30 s " + unanswered));
        if (acked.get() != count) System.exit(1);
    }

    static String ids(List<Node> nodes) {
        return nodes.stream().map(n -> Integer.toString(n.id())).collect(Collectors.joining(",", "[", "]"));
    }
}
