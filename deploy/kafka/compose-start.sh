#!/bin/sh
# Kafka for docker-compose (image apache/kafka): one KRaft node whose clients sign in with SASL/SCRAM-SHA-512 and
# may do only what ACLs allow (the standard authorizer). The same settings as the local run's broker
# (deploy/runtime.py `_sasl_properties`; tests/unit/test_access.py holds the two together). The SCRAM users, one per
# principal of deploy/access.py, are made when the storage is formatted (first start); passwords come from
# KLANTREIS_PASSWORD_<PRINCIPAL>. The `access` job gives them their ACLs.
set -eu

config=/tmp/server.properties
admin_login="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"${KLANTREIS_PASSWORD_ADMIN}\";"
controller_login="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"${KLANTREIS_PASSWORD_ADMIN}\" user_admin=\"${KLANTREIS_PASSWORD_ADMIN}\";"

umask 077
cat > "$config" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@kafka:9093
controller.listener.names=CONTROLLER
listeners=SASL_PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:29092
advertised.listeners=SASL_PLAINTEXT://kafka:9092,EXTERNAL://127.0.0.1:29092
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=${admin_login}
listener.name.external.scram-sha-512.sasl.jaas.config=${admin_login}
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=${controller_login}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF

# What the health check (kafka-broker-api-versions.sh --command-config) signs in with.
cat > /tmp/admin.properties <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=${admin_login}
EOF

set --
for principal in admin identity propositions journey notifications analytics platform; do
    variable="KLANTREIS_PASSWORD_$(echo "$principal" | tr '[:lower:]' '[:upper:]')"
    password=$(printenv "$variable") || { echo "compose-start: $variable is not set" >&2; exit 1; }
    set -- "$@" --add-scram "SCRAM-SHA-512=[name=${principal},password=${password}]"
done
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "$CLUSTER_ID" -c "$config" "$@" > /dev/null
exec /opt/kafka/bin/kafka-server-start.sh "$config"
