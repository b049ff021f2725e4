// A small Kafka admin helper for dev/stack, run from source with the cached broker jars
// (`java -cp '.stack/dist/kafka-*/libs/*' dev/lib/KafkaAdmin.java ...`): the Maven
// classpath of the broker has the admin client but not the kafka-tools CLI. Bootstrap
// servers come from KAFKA_BOOTSTRAP_SERVERS.
//
//   cluster                               the brokers that are up
//   create-topic <name> <partitions> <rf>  create (or keep) a topic; min.insync.replicas is the brokers' default
//   describe-topic <name>                  partitions, leaders, replicas, ISR and the durability settings
//   delete-topic <name>
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
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
                default -> usage();
            }
        } catch (ExecutionException e) {
            System.err.println("error: " + e.getCause());
            System.exit(1);
        }
    }

    static void usage() {
        System.err.println("usage: KafkaAdmin cluster | create-topic <name> <partitions> <rf> | describe-topic <name> | delete-topic <name>");
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

    static String ids(List<Node> nodes) {
        return nodes.stream().map(n -> Integer.toString(n.id())).collect(Collectors.joining(",", "[", "]"));
    }
}
