//! docker-compose.yml cannot be run here, so it is kept in step with `dev/stack` by
//! reading both: the ports, the broker, Redis and PostgreSQL settings, the PostgreSQL shards
//! and the topic layout of each topology (single node, and the `cluster` profile) must be the
//! same in the two. `dev/stack`'s facts live in dev/config (the topologies' `.env` files, the
//! Kafka properties, the Redis configuration), in two heap defaults in dev/lib and in the
//! PostgreSQL settings dev/lib/postgres.sh writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `KEY=value` lines of an .env or .properties file, comments and blank lines skipped.
fn key_values(path: &str) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("a key=value line");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// The default of `NAME=${NAME:-default}` in a dev/lib script.
fn shell_default(path: &str, name: &str) -> String {
    let prefix = format!("{name}=${{{name}:-");
    read(path)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("no {prefix}...}} line in {path}"))
        .to_owned()
}

/// A `NAME=value` constant in a dev/lib script.
fn shell_constant(path: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    read(path)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= line in {path}"))
        .to_owned()
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("docker-compose.yml"))
        .expect("docker-compose.yml is YAML")
        .remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &compose["services"][name];
    assert!(!s.is_badvalue(), "docker-compose.yml has no service {name}");
    s
}

/// A scalar as compose reads it (numbers and booleans become strings in the environment).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn env_var(svc: &Yaml, key: &str) -> Option<String> {
    scalar(&svc["environment"][key])
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().filter_map(scalar).collect())
        .unwrap_or_default()
}

/// The apache/kafka image's variable for a broker property: KAFKA_ + upper snake case.
fn kafka_var(property: &str) -> String {
    format!("KAFKA_{}", property.to_uppercase().replace('.', "_"))
}

/// The port of `host:port`, `scheme://host:port` or `scheme://user@host:port/path`.
fn port_of(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port.rsplit(':').next().unwrap_or(host_port)
}

fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::to_owned).collect()
}

/// The user, password, port and database of `postgres://user:password@host:port/database`.
fn postgres_url(url: &str) -> (String, String, String, String) {
    let rest = url
        .strip_prefix("postgres://")
        .unwrap_or_else(|| panic!("{url} is a postgres:// URL"));
    let (credentials, address) = rest
        .split_once('@')
        .unwrap_or_else(|| panic!("{url} names user and password"));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let database = address.split_once('/').map_or("", |(_, db)| db);
    let database = database.split('?').next().unwrap_or(database);
    (
        user.to_owned(),
        password.to_owned(),
        port_of(url).to_owned(),
        database.to_owned(),
    )
}

#[test]
fn the_single_node_kafka_has_dev_stacks_broker_settings() {
    let compose = compose();
    let kafka = service(&compose, "kafka");
    let props = key_values("dev/config/kafka.properties");
    for (key, value) in &props {
        match key.as_str() {
            // Compose formats with static voters and listens on all container interfaces for
            // the port mapping; the ports are compared below.
            "controller.quorum.bootstrap.servers" | "listeners" => continue,
            _ => assert_eq!(
                env_var(kafka, &kafka_var(key)).as_deref(),
                Some(value.as_str()),
                "kafka {key}: dev/config/kafka.properties says {value}"
            ),
        }
    }
    let listeners = env_var(kafka, "KAFKA_LISTENERS").expect("KAFKA_LISTENERS");
    let ours = &props["listeners"];
    for (theirs, ours) in list(&listeners).iter().zip(list(ours).iter()) {
        assert_eq!(
            port_of(theirs),
            port_of(ours),
            "listener {theirs} vs {ours}"
        );
    }
    let controller_port = port_of(&props["controller.quorum.bootstrap.servers"]).to_owned();
    assert_eq!(
        env_var(kafka, "KAFKA_CONTROLLER_QUORUM_VOTERS"),
        Some(format!("1@127.0.0.1:{controller_port}"))
    );
    assert_eq!(
        env_var(kafka, "KAFKA_HEAP_OPTS"),
        Some(shell_default("dev/lib/kafka.sh", "KAFKA_HEAP"))
    );
}

#[test]
fn the_single_node_services_are_published_on_dev_stacks_ports() {
    let compose = compose();
    let single = key_values("dev/config/single.env");
    let published = |name: &str| strings(&service(&compose, name)["ports"]);
    let kafka_port = port_of(&single["KAFKA_BOOTSTRAP_SERVERS"]).to_owned();
    assert_eq!(
        published("kafka"),
        [format!("127.0.0.1:{kafka_port}:{kafka_port}")]
    );
    let redis_port = port_of(&single["REDIS_URL"]).to_owned();
    assert_eq!(redis_port, "6379");
    assert_eq!(
        published("redis"),
        [format!("127.0.0.1:{redis_port}:{redis_port}")]
    );
    let pg_port = port_of(&single["DATABASE_URL"]).to_owned();
    assert_eq!(pg_port, "5432");
    assert_eq!(
        published("postgres"),
        [format!("127.0.0.1:{pg_port}:{pg_port}")]
    );
    let registry_port = port_of(&single["SCHEMA_REGISTRY_URL"]).to_owned();
    assert_eq!(
        published("registry"),
        [format!("127.0.0.1:{registry_port}:8080")]
    );
    assert!(
        strings(&service(&compose, "redis")["volumes"])
            .iter()
            .any(|v| v.starts_with("./dev/config/redis.conf:")),
        "the single Redis runs dev/config/redis.conf"
    );
}

#[test]
fn each_cluster_kafka_node_has_dev_stacks_broker_settings_and_ports() {
    let compose = compose();
    let props = key_values("dev/config/kafka-cluster.properties");
    let cluster = key_values("dev/config/cluster.env");
    let brokers = list(&cluster["KAFKA_BOOTSTRAP_SERVERS"]);
    let voters = list(&props["controller.quorum.voters"]);
    assert_eq!(brokers.len(), 3, "three brokers");
    assert_eq!(voters.len(), brokers.len(), "every node is a voter");
    // The cluster's nodes take the single node's heap, from its one home.
    assert_eq!(
        shell_default("dev/lib/kafka_cluster.sh", "KAFKA_CLUSTER_HEAP"),
        "$KAFKA_HEAP"
    );
    let heap = shell_default("dev/lib/kafka.sh", "KAFKA_HEAP");
    let cluster_id = shell_constant("dev/lib/kafka_cluster.sh", "KAFKA_CLUSTER_ID");
    for (i, broker) in brokers.iter().enumerate() {
        let n = i + 1;
        let node = service(&compose, &format!("kafka-{n}"));
        assert_eq!(strings(&node["profiles"]), ["cluster"], "kafka-{n} profile");
        for (key, value) in &props {
            assert_eq!(
                env_var(node, &kafka_var(key)).as_deref(),
                Some(value.as_str()),
                "kafka-{n} {key}: dev/config/kafka-cluster.properties says {value}"
            );
        }
        let controller = voters[i]
            .strip_prefix(&format!("{n}@"))
            .unwrap_or_else(|| panic!("voter {n} is node {n}: {}", voters[i]));
        assert_eq!(env_var(node, "KAFKA_NODE_ID"), Some(n.to_string()));
        assert_eq!(
            env_var(node, "KAFKA_LISTENERS"),
            Some(format!("PLAINTEXT://{broker},CONTROLLER://{controller}"))
        );
        assert_eq!(
            env_var(node, "KAFKA_ADVERTISED_LISTENERS"),
            Some(format!("PLAINTEXT://{broker}"))
        );
        assert_eq!(env_var(node, "KAFKA_HEAP_OPTS").as_ref(), Some(&heap));
        assert_eq!(env_var(node, "CLUSTER_ID").as_ref(), Some(&cluster_id));
    }
    assert!(
        compose["services"][format!("kafka-{}", brokers.len() + 1).as_str()].is_badvalue(),
        "no more Kafka nodes in compose than in dev/config/cluster.env"
    );
}

#[test]
fn each_cluster_redis_node_runs_dev_stacks_configuration_on_its_port() {
    let compose = compose();
    let cluster = key_values("dev/config/cluster.env");
    let nodes: Vec<String> = list(&cluster["REDIS_CLUSTER_NODES"])
        .iter()
        .map(|url| url.trim_start_matches("redis://").to_owned())
        .collect();
    assert_eq!(nodes.len(), 6, "three primaries and three replicas");
    for (i, node) in nodes.iter().enumerate() {
        let n = i + 1;
        let svc = service(&compose, &format!("redis-{n}"));
        let command = strings(&svc["command"]);
        let volumes = strings(&svc["volumes"]);
        let mounted = |file: &str| {
            volumes
                .iter()
                .find_map(|v| v.strip_prefix(&format!("./dev/config/{file}:")))
                .and_then(|v| v.split(':').next())
                .unwrap_or_else(|| panic!("redis-{n} mounts dev/config/{file}"))
                .to_owned()
        };
        let (base, cluster_conf) = (mounted("redis.conf"), mounted("redis-cluster.conf"));
        assert_eq!(
            command[..4],
            [
                "redis-server",
                base.as_str(),
                "--include",
                cluster_conf.as_str()
            ],
            "redis-{n}: redis.conf, then redis-cluster.conf"
        );
        let port = command
            .windows(2)
            .find(|w| w[0] == "--port")
            .map(|w| w[1].clone());
        assert_eq!(port.as_deref(), Some(port_of(node)), "redis-{n} port");
    }
    let create = service(&compose, "redis-cluster-create");
    assert_eq!(
        strings(&create["command"])[2..],
        nodes[..],
        "the cluster is created from every node"
    );
    assert!(
        strings(&create["volumes"])
            .iter()
            .any(|v| v.starts_with("./dev/lib/redis-cluster-create.sh:")),
        "compose forms the cluster with dev/stack's script"
    );
}

#[test]
fn each_cluster_postgres_shard_is_a_server_with_dev_stacks_settings() {
    let compose = compose();
    let single = key_values("dev/config/single.env");
    let cluster = key_values("dev/config/cluster.env");
    let shards = list(&cluster["DATABASE_URLS"]);
    assert_eq!(shards.len(), 2, "two shards");
    assert_eq!(
        cluster["DATABASE_URL"], shards[0],
        "DATABASE_URL names shard 1, for tools that take one database"
    );

    // The server settings: compose's `-c key=value`s are the lines dev/stack writes.
    let shared = service(&compose, "postgres");
    let command = strings(&shared["command"]);
    let conf = read("dev/lib/postgres.sh");
    for setting in command.windows(2).filter(|w| w[0] == "-c").map(|w| &w[1]) {
        let (key, value) = setting.split_once('=').expect("-c key=value");
        assert!(
            conf.lines().any(|l| l == format!("{key} = {value}")),
            "dev/lib/postgres.sh sets {key} = {value}"
        );
    }

    // Shard 1 is a database of the cluster's own on the single topology's server.
    let (user, password, port, database) = postgres_url(&shards[0]);
    assert_eq!(
        port,
        port_of(&single["DATABASE_URL"]),
        "shard 1 is the shared server"
    );
    assert_eq!(env_var(shared, "POSTGRES_USER"), Some(user));
    assert_eq!(env_var(shared, "POSTGRES_PASSWORD"), Some(password));
    assert!(
        read("dev/config/postgres-init.sql")
            .lines()
            .any(|l| l == format!("CREATE DATABASE {database} OWNER likes;")),
        "compose's postgres creates shard 1's database {database}"
    );

    // Every further shard N is a server of its own, postgres-N, with the shared one's settings.
    let setup = service(&compose, "setup");
    for (i, url) in shards.iter().enumerate().skip(1) {
        let n = i + 1;
        let name = format!("postgres-{n}");
        let svc = service(&compose, &name);
        let (user, password, port, database) = postgres_url(url);
        assert_eq!(strings(&svc["profiles"]), ["cluster"], "{name} profile");
        assert_eq!(svc["network_mode"].as_str(), Some("host"), "{name} network");
        assert_eq!(env_var(svc, "PGPORT"), Some(port), "{name} port");
        assert_eq!(env_var(svc, "POSTGRES_USER"), Some(user));
        assert_eq!(env_var(svc, "POSTGRES_PASSWORD"), Some(password));
        assert_eq!(env_var(svc, "POSTGRES_DB"), Some(database));
        let mut expected = command.clone();
        expected.extend(["-c".to_owned(), "listen_addresses=127.0.0.1".to_owned()]);
        assert_eq!(strings(&svc["command"]), expected, "{name} command");
        assert!(
            !setup["depends_on"][name.as_str()].is_badvalue(),
            "setup waits for {name}"
        );
    }
    assert!(
        compose["services"][format!("postgres-{}", shards.len() + 1).as_str()].is_badvalue(),
        "no more PostgreSQL shards in compose than in dev/config/cluster.env"
    );
}

#[test]
fn the_services_default_to_the_single_node_and_take_every_cluster_address() {
    let compose = compose();
    let single = key_values("dev/config/single.env");
    let cluster = key_values("dev/config/cluster.env");
    let addresses = single
        .keys()
        .chain(cluster.keys())
        .filter(|k| !k.starts_with("STACK_"));
    for name in ["setup", "ingest", "projector"] {
        let svc = service(&compose, name);
        for key in addresses.clone() {
            let default = single.get(key).map(String::as_str).unwrap_or("");
            assert_eq!(
                env_var(svc, key),
                Some(format!("${{{key}:-{default}}}")),
                "{name} {key}: from the topology's .env file, the single node's by default"
            );
        }
    }
    let setup = strings(&service(&compose, "setup")["command"]);
    let flag = |f: &str| {
        setup
            .windows(2)
            .find(|w| w[0] == f)
            .map(|w| w[1].clone())
            .unwrap_or_else(|| panic!("setup passes {f}"))
    };
    for (f, key) in [
        ("--partitions", "STACK_TOPIC_PARTITIONS"),
        ("--replication", "STACK_TOPIC_REPLICATION"),
    ] {
        assert_eq!(flag(f), format!("${{{key}:-{}}}", single[key]), "setup {f}");
        assert!(
            cluster.contains_key(key),
            "dev/config/cluster.env sets {key}"
        );
    }
}

#[test]
fn each_topologys_topics_keep_accepting_writes_with_one_replica_fewer_only_on_the_cluster() {
    let single = key_values("dev/config/single.env");
    let cluster = key_values("dev/config/cluster.env");
    let single_props = key_values("dev/config/kafka.properties");
    let cluster_props = key_values("dev/config/kafka-cluster.properties");
    let number = |m: &BTreeMap<String, String>, k: &str| -> usize {
        m[k].parse().unwrap_or_else(|e| panic!("{k}={}: {e}", m[k]))
    };
    assert_eq!(number(&single, "STACK_TOPIC_REPLICATION"), 1);
    assert_eq!(number(&single_props, "min.insync.replicas"), 1);

    let brokers = list(&cluster["KAFKA_BOOTSTRAP_SERVERS"]).len();
    let replication = number(&cluster, "STACK_TOPIC_REPLICATION");
    let min_insync = number(&cluster_props, "min.insync.replicas");
    assert_eq!(replication, brokers.min(3), "replication min(3, brokers)");
    assert_eq!(min_insync, replication - 1, "min.insync.replicas = RF - 1");
    assert_eq!(
        number(&cluster_props, "default.replication.factor"),
        replication
    );
    for internal in [
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ] {
        assert_eq!(number(&cluster_props, internal), replication, "{internal}");
    }
    assert_eq!(cluster_props["unclean.leader.election.enable"], "false");
    assert_eq!(
        single["STACK_TOPIC_PARTITIONS"], cluster["STACK_TOPIC_PARTITIONS"],
        "both topologies lay the topic out alike"
    );
}
