/*
 * fleetcore_mount: a per-client mount point for ThingsBoard-style devices on Mosquitto 2.0.
 *
 * What it does
 *   ThingsBoard firmware publishes and subscribes on the same topics whatever the device:
 *   v1/devices/me/telemetry, v1/devices/me/rpc/request/+ ... Mosquitto's `mount_point` is
 *   one fixed string per listener, so it cannot tell two such devices apart. This plugin
 *   gives every client a mount named after its MQTT username (on Mosquitto a device's
 *   username is its device id), the convention of EMQX's `mountpoint = "tb/${username}/"`:
 *
 *   - up: a non-platform client's PUBLISH to v1/devices/me/... is rewritten, after the
 *     broker's ACL check, to tb/{username}/v1/devices/me/... (MOSQ_EVT_MESSAGE); so are
 *     ThingsBoard's OTA chunk topics v2/fw/... and v2/sw/... (requests up; responses and
 *     v2/fw/error come down the same way as v1/devices/me/...). The
 *     platform's role must therefore be allowed to receive tb/#.
 *   - down: the platform client's PUBLISH to tb/{username}/v1/devices/me/... is delivered
 *     as v1/devices/me/... to that username's connected client alone
 *     (mosquitto_broker_publish_copy with its client id; same QoS, retain false, no MQTT 5
 *     properties). An unknown username (device not connected) drops the copy: command
 *     delivery retries on its own. The platform's original is then renamed
 *     $fleetcore/down/{username}/... (retain cleared), a topic nobody may read: tb/ carries
 *     only what devices said, so the ingest subscription $share/fleetcore/tb/+/v1/devices/me/#
 *     never gets the platform's own commands back (ThingsBoard uses the same topic both ways:
 *     rpc/request/{n}, attributes). Hence an MQTT 5 PUBACK to the platform says 0x10 (no
 *     matching subscribers) whether or not the device got the copy.
 *   - client ids starting "fleetcore-" are the platform's: any other user connecting with
 *     one is refused (MOSQ_EVT_BASIC_AUTH, before dynamic security; see on_basic_auth).
 *   - defence in depth beside the dynamic-security ACLs: a non-platform client may not
 *     publish, subscribe to or receive anything under tb/ or $fleetcore/
 *     (MOSQ_EVT_ACL_CHECK answers MOSQ_ERR_ACL_DENIED; every other check is deferred to
 *     dynamic security), and a publish under tb/ that got past the ACLs is refused again in
 *     MOSQ_EVT_MESSAGE. Mosquitto 2.0.11 answers any refused PUBLISH (PUBACK 0x87 at QoS 1)
 *     and then closes the client's connection, whoever refused it.
 *   - readiness notice: when a non-platform client subscribes to a filter under
 *     v1/devices/me/, the plugin publishes the filter (QoS 1) on
 *     fleetcore/subscribed/{username}, so the platform knows a ThingsBoard device is ready
 *     for RPC and can send what waits for it. The notice says the device asked; dynamic
 *     security decides after us (a device role allows v1/devices/me/#, so the two agree).
 *
 *   The plugin keeps username -> (client id, client) for connected non-platform clients:
 *   recorded whenever the client is seen in an ACL check or a message (never at
 *   MOSQ_EVT_BASIC_AUTH, where authentication may still fail), forgotten at
 *   MOSQ_EVT_DISCONNECT when the entry still names that client. A chained hash table
 *   (FNV-1a, doubled when the load passes 3/4): O(1) expected per lookup, insert and
 *   removal, O(n) for a resize; memory is one entry per connected device. A device that
 *   resumes a persistent session without subscribing or publishing is unknown until it
 *   does one of them; one username connected under two client ids keeps the latest seen.
 *
 * Build (Debian: mosquitto-dev, libmosquitto-dev, gcc):
 *   scripts/build-mosquitto-plugin.sh [OUT_DIR]    (default var/mosquitto/)
 *   gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o fleetcore_mount.so fleetcore_mount.c
 *
 * Configure (mosquitto.conf; Mosquitto 2.0 allows several `plugin` lines, and each
 * `plugin_opt_*` belongs to the `plugin` line above it). Load this plugin BEFORE dynamic
 * security: the first plugin that does not defer an ACL check decides it, and this one must
 * see every check to record clients and to deny tb/ to devices (loaded after dynamic
 * security it sees only the checks dynsec denies: no notices, devices never recorded):
 *   per_listener_settings false
 *   plugin /path/to/fleetcore_mount.so
 *   plugin_opt_platform_username fleetcore
 *   plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
 *   plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define TB_PREFIX "v1/devices/me/"
/* ThingsBoard's OTA chunk topics: v2/fw/request/{id}/chunk/{n} up, .../response/... and
 * v2/fw/error down; the same names for every device, so mounted like v1/devices/me/. */
#define FW_PREFIX "v2/fw/"
#define SW_PREFIX "v2/sw/"
#define MOUNT_ROOT "tb/"
#define NOTICE_ROOT "fleetcore/subscribed/"
#define SINK_ROOT "$fleetcore/down/"
#define INITIAL_BUCKETS 1024

struct entry {
	struct entry *next;
	char *username;
	char *client_id;
	const struct mosquitto *client; /* compared, never dereferenced */
	uint64_t hash;
};

struct table {
	struct entry **buckets;
	size_t bucket_count;
	size_t count;
};

static mosquitto_plugin_id_t *plugin_id;
static char *platform_username;
static struct table clients;

static bool starts_with(const char *text, const char *prefix)
{
	return strncmp(text, prefix, strlen(prefix)) == 0;
}

static bool is_platform(const char *username)
{
	return strcmp(username, platform_username) == 0;
}

/* A topic every ThingsBoard device uses under the same name: mounted per client. */
static bool device_topic(const char *topic)
{
	return starts_with(topic, TB_PREFIX) || starts_with(topic, FW_PREFIX) || starts_with(topic, SW_PREFIX);
}

/* A username that can stand as one topic level: not empty, no separator or wildcard. */
static bool mountable(const char *username)
{
	return username[0] != '\0' && strpbrk(username, "/+#") == NULL;
}

/* ---- username -> client id ------------------------------------------------------ */

static uint64_t fnv1a(const char *key, size_t len)
{
	uint64_t hash = 14695981039346656037ULL;
	for(size_t i = 0; i < len; i++){
		hash ^= (unsigned char)key[i];
		hash *= 1099511628211ULL;
	}
	return hash;
}

static int table_init(struct table *table, size_t bucket_count)
{
	table->buckets = mosquitto_calloc(bucket_count, sizeof(struct entry *));
	if(table->buckets == NULL) return MOSQ_ERR_NOMEM;
	table->bucket_count = bucket_count;
	table->count = 0;
	return MOSQ_ERR_SUCCESS;
}

static void entry_free(struct entry *entry)
{
	mosquitto_free(entry->username);
	mosquitto_free(entry->client_id);
	mosquitto_free(entry);
}

static void table_free(struct table *table)
{
	for(size_t i = 0; i < table->bucket_count; i++){
		struct entry *entry = table->buckets[i];
		while(entry){
			struct entry *next = entry->next;
			entry_free(entry);
			entry = next;
		}
	}
	mosquitto_free(table->buckets);
	table->buckets = NULL;
	table->bucket_count = 0;
	table->count = 0;
}

/* The slot holding the entry for `key` (len bytes), or the empty slot at its chain's end. */
static struct entry **table_slot(const struct table *table, const char *key, size_t len, uint64_t hash)
{
	struct entry **slot = &table->buckets[hash % table->bucket_count];
	while(*slot){
		struct entry *entry = *slot;
		if(entry->hash == hash && strlen(entry->username) == len && memcmp(entry->username, key, len) == 0){
			return slot;
		}
		slot = &entry->next;
	}
	return slot;
}

/* Doubles the bucket array; on allocation failure the table simply stays denser. */
static void table_grow(struct table *table)
{
	size_t bucket_count = table->bucket_count * 2;
	struct entry **buckets = mosquitto_calloc(bucket_count, sizeof(struct entry *));
	if(buckets == NULL) return;
	for(size_t i = 0; i < table->bucket_count; i++){
		struct entry *entry = table->buckets[i];
		while(entry){
			struct entry *next = entry->next;
			size_t index = entry->hash % bucket_count;
			entry->next = buckets[index];
			buckets[index] = entry;
			entry = next;
		}
	}
	mosquitto_free(table->buckets);
	table->buckets = buckets;
	table->bucket_count = bucket_count;
}

static const char *table_get(const struct table *table, const char *username, size_t len)
{
	struct entry *entry = *table_slot(table, username, len, fnv1a(username, len));
	return entry ? entry->client_id : NULL;
}

/* Records that `client` (with `client_id`) is the connection of `username`. */
static void table_put(struct table *table, const char *username, const char *client_id, const struct mosquitto *client)
{
	size_t len = strlen(username);
	uint64_t hash = fnv1a(username, len);
	struct entry **slot = table_slot(table, username, len, hash);
	struct entry *entry = *slot;

	if(entry){
		if(entry->client == client && strcmp(entry->client_id, client_id) == 0) return;
		char *copy = mosquitto_strdup(client_id);
		if(copy == NULL) return;
		mosquitto_free(entry->client_id);
		entry->client_id = copy;
		entry->client = client;
		return;
	}
	entry = mosquitto_calloc(1, sizeof(struct entry));
	if(entry == NULL) return;
	entry->username = mosquitto_strdup(username);
	entry->client_id = mosquitto_strdup(client_id);
	if(entry->username == NULL || entry->client_id == NULL){
		entry_free(entry);
		return;
	}
	entry->client = client;
	entry->hash = hash;
	*slot = entry;
	table->count++;
	if(table->count * 4 > table->bucket_count * 3) table_grow(table);
}

/* Forgets `username` only while its entry still names this client. */
static void table_forget(struct table *table, const char *username, const char *client_id, const struct mosquitto *client)
{
	size_t len = strlen(username);
	struct entry **slot = table_slot(table, username, len, fnv1a(username, len));
	struct entry *entry = *slot;

	if(entry == NULL || entry->client != client || strcmp(entry->client_id, client_id) != 0) return;
	*slot = entry->next;
	entry_free(entry);
	table->count--;
}

/* ---- the events ----------------------------------------------------------------- */

/* The username of a device-side client worth tracking, or NULL. */
static const char *device_username(const struct mosquitto *client)
{
	const char *username = mosquitto_client_username(client);
	if(username == NULL || is_platform(username)) return NULL;
	return username;
}

static void remember(struct mosquitto *client, const char *username)
{
	const char *client_id = mosquitto_client_id(client);
	if(client_id != NULL) table_put(&clients, username, client_id, client);
}

static void announce_subscription(const char *username, const char *filter)
{
	size_t len = strlen(NOTICE_ROOT) + strlen(username) + 1;
	char *topic = mosquitto_malloc(len);
	if(topic == NULL) return;
	snprintf(topic, len, "%s%s", NOTICE_ROOT, username);
	if(mosquitto_broker_publish_copy(NULL, topic, (int)strlen(filter), filter, 1, false, NULL) != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "fleetcore_mount: could not publish %s", topic);
	}
	mosquitto_free(topic);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username = device_username(ed->client);
	(void)event;
	(void)userdata;

	if(username == NULL) return MOSQ_ERR_PLUGIN_DEFER;
	remember(ed->client, username);
	if(ed->topic == NULL) return MOSQ_ERR_PLUGIN_DEFER;
	if((starts_with(ed->topic, MOUNT_ROOT) || starts_with(ed->topic, SINK_ROOT)) && ed->access != MOSQ_ACL_UNSUBSCRIBE){
		return MOSQ_ERR_ACL_DENIED;
	}
	if(ed->access == MOSQ_ACL_SUBSCRIBE && starts_with(ed->topic, TB_PREFIX) && mountable(username)){
		announce_subscription(username, ed->topic);
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

/* v1/devices/me/... (or v2/fw/..., v2/sw/...) -> tb/{username}/... */
static int mount(struct mosquitto_evt_message *ed, const char *username)
{
	size_t len = strlen(MOUNT_ROOT) + strlen(username) + 1 + strlen(ed->topic) + 1;
	char *topic = mosquitto_malloc(len);
	if(topic == NULL) return MOSQ_ERR_NOMEM;
	snprintf(topic, len, "%s%s/%s", MOUNT_ROOT, username, ed->topic);
	mosquitto_free(ed->topic);
	ed->topic = topic;
	return MOSQ_ERR_SUCCESS;
}

/* tb/{username}/v1/devices/me/... (or v2/...) from the platform -> v1/devices/me/... to that client. */
static void deliver_down(const struct mosquitto_evt_message *ed)
{
	const char *username = ed->topic + strlen(MOUNT_ROOT);
	const char *slash = strchr(username, '/');
	if(slash == NULL || slash == username) return;
	const char *topic = slash + 1;
	if(!device_topic(topic)) return;

	const char *client_id = table_get(&clients, username, (size_t)(slash - username));
	if(client_id == NULL){
		mosquitto_log_printf(MOSQ_LOG_DEBUG, "fleetcore_mount: %s not connected, dropped", ed->topic);
		return;
	}
	int rc = mosquitto_broker_publish_copy(client_id, topic, (int)ed->payloadlen, ed->payload, ed->qos, false, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "fleetcore_mount: could not deliver %s (%d)", ed->topic, rc);
	}
}

/* tb/{username}/... -> $fleetcore/down/{username}/...: the platform's original routes to nobody. */
static int sink(struct mosquitto_evt_message *ed)
{
	const char *tail = ed->topic + strlen(MOUNT_ROOT);
	size_t len = strlen(SINK_ROOT) + strlen(tail) + 1;
	char *topic = mosquitto_malloc(len);
	if(topic == NULL) return MOSQ_ERR_NOMEM;
	snprintf(topic, len, "%s%s", SINK_ROOT, tail);
	mosquitto_free(ed->topic);
	ed->topic = topic;
	ed->retain = false;
	return MOSQ_ERR_SUCCESS;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);
	(void)event;
	(void)userdata;

	if(username == NULL) return MOSQ_ERR_SUCCESS;
	if(is_platform(username)){
		if(!starts_with(ed->topic, MOUNT_ROOT)) return MOSQ_ERR_SUCCESS;
		deliver_down(ed);
		return sink(ed);
	}
	remember(ed->client, username);
	if(starts_with(ed->topic, MOUNT_ROOT)) return MOSQ_ERR_ACL_DENIED;
	if(device_topic(ed->topic)){
		/* A username that is not one topic level could pose as another device's mount. */
		if(!mountable(username)) return MOSQ_ERR_ACL_DENIED;
		return mount(ed, username);
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	const char *username = device_username(ed->client);
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;

	if(username != NULL && client_id != NULL) table_forget(&clients, username, client_id, ed->client);
	return MOSQ_ERR_SUCCESS;
}

/* ---- the platform's client ids ---------------------------------------------------- */

/* The platform's own client ids (ingest workers, the ordered lane, api publishers) start so
 * (fleetcore.device_messages.acl.PLATFORM_CLIENT_ID_PREFIX). Mosquitto gives a client id's
 * session to whoever connects with it last, so a device using one could take a worker's
 * session over: any user but the platform's is refused here. This plugin is loaded before
 * dynamic security, and Mosquitto 2.0 asks the basic-auth callbacks in that order, the first
 * answer other than "defer" deciding; everything else is deferred to dynamic security. */
#define PLATFORM_CLIENT_ID_PREFIX "fleetcore-"

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;

	if(client_id != NULL
			&& strncmp(client_id, PLATFORM_CLIENT_ID_PREFIX, strlen(PLATFORM_CLIENT_ID_PREFIX)) == 0
			&& (ed->username == NULL || strcmp(ed->username, platform_username) != 0)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"fleetcore_mount: refused client id %s: reserved for the platform", client_id);
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

/* ---- plugin entry points -------------------------------------------------------- */

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	const char *platform = "fleetcore";
	(void)userdata;

	for(int i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "platform_username") == 0 && options[i].value[0] != '\0'){
			platform = options[i].value;
		}
	}
	platform_username = mosquitto_strdup(platform);
	if(platform_username == NULL) return MOSQ_ERR_NOMEM;
	if(table_init(&clients, INITIAL_BUCKETS) != MOSQ_ERR_SUCCESS) return MOSQ_ERR_NOMEM;

	plugin_id = identifier;
	int rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	mosquitto_log_printf(MOSQ_LOG_INFO, "fleetcore_mount: platform username %s", platform_username);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;

	if(plugin_id != NULL){
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	}
	table_free(&clients);
	mosquitto_free(platform_username);
	platform_username = NULL;
	return MOSQ_ERR_SUCCESS;
}
