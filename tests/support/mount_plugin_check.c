/*
 * The fleetcore_mount plugin's logic without a broker, at a scale the broker tests do not
 * reach: its source is included whole and the broker functions it calls are stubbed here.
 * tests/test_mosquitto_mount.py compiles this with AddressSanitizer and runs it; a failed
 * check prints what failed and exits 1.
 */

#include "../../deploy/mosquitto/fleetcore_mount.c"

#include <stdarg.h>
#include <stdlib.h>

struct mosquitto {
	const char *username;
	const char *id;
};

static int failures;
static int published;
static char last_client[128];
static char last_topic[256];

#define CHECK(cond) do{ if(!(cond)){ fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); failures++; } }while(0)

void *mosquitto_calloc(size_t nmemb, size_t size) { return calloc(nmemb, size); }
void *mosquitto_malloc(size_t size) { return malloc(size); }
void mosquitto_free(void *mem) { free(mem); }
char *mosquitto_strdup(const char *s) { return strdup(s); }
void mosquitto_log_printf(int level, const char *fmt, ...) { (void)level; (void)fmt; }
const char *mosquitto_client_username(const struct mosquitto *client) { return client->username; }
const char *mosquitto_client_id(const struct mosquitto *client) { return client->id; }

int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb, const void *event_data, void *userdata)
{
	(void)identifier; (void)event; (void)cb; (void)event_data; (void)userdata;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event, MOSQ_FUNC_generic_callback cb, const void *event_data)
{
	(void)identifier; (void)event; (void)cb; (void)event_data;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_broker_publish_copy(const char *clientid, const char *topic, int payloadlen, const void *payload, int qos, bool retain, mosquitto_property *properties)
{
	(void)payloadlen; (void)payload; (void)qos; (void)retain; (void)properties;
	published++;
	snprintf(last_client, sizeof(last_client), "%s", clientid ? clientid : "(all)");
	snprintf(last_topic, sizeof(last_topic), "%s", topic);
	return MOSQ_ERR_SUCCESS;
}

static int publish(struct mosquitto *client, const char *topic, char **out)
{
	struct mosquitto_evt_message ed;
	memset(&ed, 0, sizeof(ed));
	ed.client = client;
	ed.topic = strdup(topic);
	ed.payload = "x";
	ed.payloadlen = 1;
	ed.qos = 1;
	ed.retain = true;
	int rc = on_message(MOSQ_EVT_MESSAGE, &ed, NULL);
	*out = ed.topic;
	CHECK(rc != MOSQ_ERR_SUCCESS || !(ed.retain && strncmp(ed.topic, SINK_ROOT, strlen(SINK_ROOT)) == 0));
	return rc;
}

static int acl(struct mosquitto *client, const char *topic, int access)
{
	struct mosquitto_evt_acl_check ed;
	memset(&ed, 0, sizeof(ed));
	ed.client = client;
	ed.topic = topic;
	ed.access = access;
	return on_acl_check(MOSQ_EVT_ACL_CHECK, &ed, NULL);
}

static void disconnect(struct mosquitto *client)
{
	struct mosquitto_evt_disconnect ed;
	memset(&ed, 0, sizeof(ed));
	ed.client = client;
	on_disconnect(MOSQ_EVT_DISCONNECT, &ed, NULL);
}

enum { DEVICES = 100000 };

int main(void)
{
	struct mosquitto_opt opt = { "platform_username", "fleetcore" };
	int version = 5;
	CHECK(mosquitto_plugin_version(1, &version) == 5);
	CHECK(mosquitto_plugin_init(NULL, NULL, &opt, 1) == MOSQ_ERR_SUCCESS);

	/* Many devices: the table grows; each is found under its own client id. */
	static char names[DEVICES][24], ids[DEVICES][24];
	static struct mosquitto clients_[DEVICES];
	for(int i = 0; i < DEVICES; i++){
		snprintf(names[i], sizeof(names[i]), "device-%d", i);
		snprintf(ids[i], sizeof(ids[i]), "client-%d", i);
		clients_[i] = (struct mosquitto){ names[i], ids[i] };
		CHECK(acl(&clients_[i], "v1/devices/me/rpc/request/+", MOSQ_ACL_READ) == MOSQ_ERR_PLUGIN_DEFER);
	}
	CHECK(clients.count == DEVICES);
	CHECK(clients.bucket_count * 3 >= clients.count * 4);
	for(int i = 0; i < DEVICES; i += 997){
		const char *id = table_get(&clients, names[i], strlen(names[i]));
		CHECK(id != NULL && strcmp(id, ids[i]) == 0);
	}

	/* Down: the named device alone; an unknown one gets nothing; the original is sunk. */
	struct mosquitto platform = { "fleetcore", "ingest-1" };
	char *topic;
	published = 0;
	CHECK(publish(&platform, "tb/device-42/v1/devices/me/rpc/request/7", &topic) == MOSQ_ERR_SUCCESS);
	CHECK(published == 1 && strcmp(last_client, "client-42") == 0);
	CHECK(strcmp(last_topic, "v1/devices/me/rpc/request/7") == 0);
	CHECK(strcmp(topic, "$fleetcore/down/device-42/v1/devices/me/rpc/request/7") == 0);
	free(topic);
	CHECK(publish(&platform, "tb/nobody/v1/devices/me/rpc/request/7", &topic) == MOSQ_ERR_SUCCESS);
	free(topic);
	CHECK(publish(&platform, "tb/device-42/devices/x/commands", &topic) == MOSQ_ERR_SUCCESS);
	free(topic);
	CHECK(publish(&platform, "tb//v1/devices/me/x", &topic) == MOSQ_ERR_SUCCESS);
	free(topic);
	CHECK(published == 1);
	CHECK(publish(&platform, "devices/x/commands", &topic) == MOSQ_ERR_SUCCESS);
	CHECK(strcmp(topic, "devices/x/commands") == 0);
	free(topic);

	/* Up: mounted; tb/ refused; other topics untouched; no username level, no mount. */
	CHECK(publish(&clients_[7], "v1/devices/me/telemetry", &topic) == MOSQ_ERR_SUCCESS);
	CHECK(strcmp(topic, "tb/device-7/v1/devices/me/telemetry") == 0);
	free(topic);
	CHECK(publish(&clients_[7], "tb/device-8/v1/devices/me/telemetry", &topic) == MOSQ_ERR_ACL_DENIED);
	free(topic);
	CHECK(publish(&clients_[7], "devices/device-7/telemetry", &topic) == MOSQ_ERR_SUCCESS);
	CHECK(strcmp(topic, "devices/device-7/telemetry") == 0);
	free(topic);
	struct mosquitto slashed = { "a/v1/devices/me", "c-slash" };
	CHECK(publish(&slashed, "v1/devices/me/telemetry", &topic) == MOSQ_ERR_ACL_DENIED);
	free(topic);
	struct mosquitto anonymous = { NULL, "c-anon" };
	CHECK(publish(&anonymous, "v1/devices/me/telemetry", &topic) == MOSQ_ERR_SUCCESS);
	CHECK(strcmp(topic, "v1/devices/me/telemetry") == 0);
	free(topic);

	/* ACL: tb/ and the sink closed to devices, open (deferred) to the platform. */
	CHECK(acl(&clients_[1], "tb/device-1/v1/devices/me/telemetry", MOSQ_ACL_READ) == MOSQ_ERR_ACL_DENIED);
	CHECK(acl(&clients_[1], "tb/#", MOSQ_ACL_SUBSCRIBE) == MOSQ_ERR_ACL_DENIED);
	CHECK(acl(&clients_[1], "$fleetcore/down/#", MOSQ_ACL_SUBSCRIBE) == MOSQ_ERR_ACL_DENIED);
	CHECK(acl(&clients_[1], "tb/#", MOSQ_ACL_UNSUBSCRIBE) == MOSQ_ERR_PLUGIN_DEFER);
	CHECK(acl(&platform, "tb/#", MOSQ_ACL_SUBSCRIBE) == MOSQ_ERR_PLUGIN_DEFER);

	/* The subscribe notice: ThingsBoard filters only. */
	published = 0;
	CHECK(acl(&clients_[3], "devices/device-3/commands", MOSQ_ACL_SUBSCRIBE) == MOSQ_ERR_PLUGIN_DEFER);
	CHECK(published == 0);
	CHECK(acl(&clients_[3], "v1/devices/me/attributes", MOSQ_ACL_SUBSCRIBE) == MOSQ_ERR_PLUGIN_DEFER);
	CHECK(published == 1 && strcmp(last_client, "(all)") == 0);
	CHECK(strcmp(last_topic, "fleetcore/subscribed/device-3") == 0);

	/* A new connection of a username replaces the old; the old one's exit keeps the new. */
	struct mosquitto again = { "device-5", "client-5b" };
	acl(&again, "v1/devices/me/attributes", MOSQ_ACL_READ);
	disconnect(&clients_[5]);
	CHECK(strcmp(table_get(&clients, "device-5", 8), "client-5b") == 0);
	disconnect(&again);
	CHECK(table_get(&clients, "device-5", 8) == NULL);

	/* Everyone leaves: the table empties. */
	for(int i = 0; i < DEVICES; i++) disconnect(&clients_[i]);
	disconnect(&slashed);
	CHECK(clients.count == 0);

	mosquitto_plugin_cleanup(NULL, &opt, 1);
	if(failures) return 1;
	printf("ok\n");
	return 0;
}
