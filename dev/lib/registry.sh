# Apicurio Registry 3 from Maven Central (io.apicurio:apicurio-registry-app,
# tar.gz:all), run with `java -jar quarkus-run.jar` on 127.0.0.1:8081. Its
# storage is SQL on our PostgreSQL (database apicurio), not the in-memory
# default: a restart must keep schema ids, or old events stop decoding.
# Clients use the Confluent-compatible API under /apis/ccompat/v7.

REGISTRY_HEAP=${REGISTRY_HEAP:--Xms128m -Xmx512m}
REGISTRY_URL=http://127.0.0.1:8081/apis/ccompat/v7

registry_home() { echo "$STACK_DIR/dist/apicurio-registry-$(pom_property apicurio.version)"; }

registry_install() {
  local home; home=$(registry_home)
  [[ -f $home/.complete ]] && return 0
  local version; version=$(pom_property apicurio.version)
  log "fetching Apicurio Registry $version with Maven"
  mkdir -p "$STACK_DIR/dist"
  mvn_stack dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$version:tar.gz:all" \
    -DoutputDirectory="$STACK_DIR/dist"
  rm -rf "$home"; mkdir -p "$home"
  tar -xzf "$STACK_DIR/dist/apicurio-registry-app-$version-all.tar.gz" -C "$home"
  rm -f "$STACK_DIR/dist/apicurio-registry-app-$version-all.tar.gz"
  # 3.2+ has quarkus-run.jar at the root, 3.1 under quarkus-app/.
  [[ -f $home/quarkus-run.jar || -f $home/quarkus-app/quarkus-run.jar ]] || die "no quarkus-run.jar in the registry archive"
  touch "$home/.complete"
}

# Registry 3.3 is built for Java 21+: use the newest JDK the machine has.
registry_java() {
  local jdk
  for jdk in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-21-jdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64; do
    [[ -x $jdk/bin/java ]] && { echo "$jdk/bin/java"; return; }
  done
  local v; v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  ((v >= 21)) || die "Apicurio Registry needs Java 21 or newer (found $v); install temurin-25 or openjdk-21"
  echo java
}

registry_ready() { curl -sf "$REGISTRY_URL/subjects" >/dev/null; }

registry_start() {
  if running_pid registry >/dev/null; then return 0; fi
  registry_install
  running_pid postgres >/dev/null || postgres_start
  local home jar; home=$(registry_home)
  jar=$home/quarkus-run.jar; [[ -f $jar ]] || jar=$home/quarkus-app/quarkus-run.jar
  log "starting Apicurio Registry"
  : >"$(log_file registry)"
  # shellcheck disable=SC2086 # the heap options are words on purpose
  spawn registry "$(registry_java)" $REGISTRY_HEAP -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port=8081 \
    -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=postgresql \
    -Dapicurio.datasource.url=jdbc:postgresql://127.0.0.1:5432/apicurio \
    -Dapicurio.datasource.username=likes -Dapicurio.datasource.password=likes \
    -Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2 \
    -Dapicurio.datasource.jdbc.max-size=10 \
    -Dapicurio.rest.deletion.artifact.enabled=true \
    -Dapicurio.rest.deletion.artifact-version.enabled=true \
    -jar "$jar"
  wait_until registry 180 "$(log_file registry)" registry_ready
  log "Apicurio Registry ready on $REGISTRY_URL"
}

registry_stop() { stop_pid registry 30; }
registry_restart() { registry_stop; registry_start; }
