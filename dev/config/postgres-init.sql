-- Run once by the postgres:15 image on an empty data volume (docker-compose.yml mounts this
-- file into /docker-entrypoint-initdb.d/). The image itself creates role `likes` and database
-- `likes` from POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB; the schema registry keeps its
-- tables in a database of its own, and the cluster topology (the `cluster` profile) its shard 1
-- (DATABASE_URLS of dev/config/cluster.env). dev/stack does the same for the local (non-Docker)
-- stack.
CREATE DATABASE apicurio OWNER likes;
CREATE DATABASE likes_cluster OWNER likes;
