/* A Mosquitto plugin that registers the same callbacks as mqtt-policy's and does nothing in
 * them: what Mosquitto itself spends because a plugin is there (building each event, the call),
 * the floor any plugin starts from. Built with -DIDLE_THREAD, it also starts one thread that
 * only sleeps: glibc then takes its multi-threaded paths (locks in malloc and free,
 * cancellation bookkeeping around every system call) on the broker's thread too.
 * Built and loaded only by the bench scripts; never shipped. */
#include <stddef.h>
#ifdef IDLE_THREAD
#include <pthread.h>
#include <unistd.h>

static void *sleep_forever(void *arg)
{
	(void)arg;
	for (;;) pause();
	return NULL;
}
#endif
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id;
static const int events[] = {MOSQ_EVT_BASIC_AUTH, MOSQ_EVT_ACL_CHECK, MOSQ_EVT_MESSAGE, MOSQ_EVT_DISCONNECT,
                             MOSQ_EVT_RELOAD, MOSQ_EVT_TICK};

static int allow(int event, void *data, void *userdata)
{
	(void)event; (void)data; (void)userdata;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int count, const int *versions)
{
	for (int i = 0; i < count; i++) {
		if (versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **userdata, struct mosquitto_opt *opts, int count)
{
	(void)userdata; (void)opts; (void)count;
	plugin_id = id;
#ifdef IDLE_THREAD
	pthread_t thread;
	if (pthread_create(&thread, NULL, sleep_forever, NULL) != 0) return MOSQ_ERR_UNKNOWN;
	pthread_detach(thread);
#endif
	for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
		int rc = mosquitto_callback_register(id, events[i], allow, NULL, NULL);
		if (rc != MOSQ_ERR_SUCCESS) return rc;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int count)
{
	(void)userdata; (void)opts; (void)count;
	for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
		mosquitto_callback_unregister(plugin_id, events[i], allow, NULL);
	}
	return MOSQ_ERR_SUCCESS;
}
