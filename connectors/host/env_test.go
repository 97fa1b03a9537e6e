package host

import (
	"strings"
	"testing"
)

// A connector may run third-party code: the runner's infrastructure credentials must not reach
// it through the environment.
func TestPluginEnvWithholdsInfrastructureSecrets(t *testing.T) {
	secrets := map[string]string{
		"FLOWD_REDIS_PASSWORD":           "redis-secret-1",
		"FLOWD_REDIS_URL":                "redis://u:redis-secret-2@10.0.0.1:6379/0",
		"FLOWD_KAFKA_SASL_PASSWORD":      "kafka-secret-3",
		"FLOWD_KAFKA_SASL_USERNAME":      "flowd",
		"FLOWD_KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka-secret-4",
		"FLOWD_SECRET_KEY":               "secret-key-5",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("FLOWD_CONNECTOR_GREETING", "hello") // operators' connector settings still pass
	env := pluginEnv(nil)
	joined := strings.Join(env, "\n")
	for k, v := range secrets {
		if strings.Contains(joined, k+"=") || strings.Contains(joined, v) {
			t.Errorf("connector environment carries %s", k)
		}
	}
	if !strings.Contains(joined, "FLOWD_CONNECTOR_GREETING=hello") {
		t.Errorf("FLOWD_CONNECTOR_* not passed: %v", env)
	}
}

// Connectors export spans where the runner does, without the collector's credentials.
func TestPluginEnvPassesTracingSettings(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer collector-secret")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer collector-secret-2")
	t.Setenv("OTEL_SERVICE_NAME", "flowd-runner")
	joined := strings.Join(pluginEnv(nil), "\n")
	for _, want := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"} {
		if !strings.Contains(joined, want) {
			t.Errorf("connector environment lacks %s", want)
		}
	}
	for _, banned := range []string{"collector-secret", "OTEL_SERVICE_NAME"} {
		if strings.Contains(joined, banned) {
			t.Errorf("connector environment carries %s", banned)
		}
	}
}
