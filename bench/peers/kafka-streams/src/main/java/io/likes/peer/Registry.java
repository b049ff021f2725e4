package io.likes.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writer schemas by id from the registry's Confluent-compatible API
 * ({@code GET $SCHEMA_REGISTRY_URL/schemas/ids/{id}}, Apicurio's ccompat v7),
 * fetched once per id and kept.
 *
 * <p>A 404 means the id is unknown: the caller treats the record as poison. Any
 * other failure (connection refused, 5xx, timeout) says nothing about the
 * record, so the lookup is retried with backoff until it answers: skipping a
 * record because the registry was briefly down would lose an accepted event.
 */
final class Registry {
    private static final Logger LOG = LoggerFactory.getLogger(Registry.class);
    private static final ObjectMapper JSON = new ObjectMapper();

    private final String baseUrl;
    private final HttpClient http = HttpClient.newBuilder()
            .connectTimeout(Duration.ofSeconds(5))
            .build();
    private final ConcurrentHashMap<Integer, Schema> schemas = new ConcurrentHashMap<>();

    Registry(String baseUrl) {
        this.baseUrl = baseUrl.endsWith("/") ? baseUrl.substring(0, baseUrl.length() - 1) : baseUrl;
    }

    /** The writer schema of {@code id}, or empty when the registry does not know it or it is not Avro. */
    Optional<Schema> schema(int id) {
        Schema known = schemas.get(id);
        if (known != null) {
            return Optional.of(known);
        }
        Optional<Schema> fetched = fetch(id);
        fetched.ifPresent(schema -> schemas.put(id, schema));
        return fetched;
    }

    private Optional<Schema> fetch(int id) {
        HttpRequest request = HttpRequest.newBuilder(URI.create(baseUrl + "/schemas/ids/" + id))
                .timeout(Duration.ofSeconds(10))
                .GET()
                .build();
        long pauseMs = 100;
        while (true) {
            try {
                HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
                if (response.statusCode() == 404) {
                    return Optional.empty();
                }
                if (response.statusCode() == 200) {
                    JsonNode body = JSON.readTree(response.body());
                    String type = body.path("schemaType").asText("AVRO");
                    if (!type.equals("AVRO") || !body.hasNonNull("schema")) {
                        return Optional.empty();
                    }
                    try {
                        return Optional.of(new Schema.Parser().parse(body.get("schema").asText()));
                    } catch (RuntimeException unparsable) {
                        LOG.warn("schema {} does not parse as avro: {}", id, unparsable.getMessage());
                        return Optional.empty();
                    }
                }
                LOG.warn("registry answered {} for schema {}, asking again", response.statusCode(), id);
            } catch (IOException e) {
                LOG.warn("registry unreachable for schema {}, asking again: {}", id, e.toString());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while fetching schema " + id, e);
            }
            try {
                Thread.sleep(pauseMs);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while fetching schema " + id, e);
            }
            pauseMs = Math.min(pauseMs * 2, 5_000);
        }
    }
}
