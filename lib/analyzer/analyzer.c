/*
 * analyzer.c - the analyzer interface: choosing a backend from the
 * configuration (DESIGN §1), and what every backend shares.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

/* DESIGN §1's choice: the analyzer's name, or NULL with err (78). */
const char *
dq_analyzer_choice(struct dq_err *err)
{
	const char *name = dq_cfg.analyzer;

	if (name == NULL || *name == '\0') {
		/* DESIGN §1: azure-openai when its endpoint is set, else reference. */
		if (dq_cfg.ai_endpoint && *dq_cfg.ai_endpoint)
			name = "azure-openai";
		else if (dq_cfg.reference_dir && *dq_cfg.reference_dir)
			name = "reference";
	}
	if (name == NULL || *name == '\0') {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "no analyzer configured: set DQ_REFERENCE_DIR (offline reference "
		    "analyzer), AZURE_AI_PROJECT_ENDPOINT (Azure OpenAI), or DQ_ANALYZER");
		return NULL;
	}
	if (strcmp(name, "reference") && strcmp(name, "azure-openai")) {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "DQ_ANALYZER: unknown analyzer \"%s\" (expected reference or azure-openai)",
		    name);
		return NULL;
	}
	return name;
}

/* DQ_CACHE_DIR, else $XDG_CACHE_HOME/dq, else $HOME/.cache/dq (malloc'd, or NULL). */
char *
dq_cache_dir(const char *cachedir)
{
	const char *x;

	if (cachedir && *cachedir)
		return dq_xstrdup(cachedir);
	if ((x = getenv("XDG_CACHE_HOME")) && *x == '/')
		return dq_xasprintf("%s/dq", x);
	if ((x = getenv("HOME")) && *x == '/')
		return dq_xasprintf("%s/.cache/dq", x);
	return NULL;
}

struct dq_analyzer *
dq_analyzer_open(struct dq_err *err)
{
	const char *name = dq_analyzer_choice(err);

	if (name == NULL)
		return NULL;
	if (strcmp(name, "reference") == 0)
		return dq_analyzer_reference_open(dq_cfg.reference_dir,
		    dq_cfg.cache_dir, err);
	return dq_analyzer_openai_open(err);
}

void
dq_analyzer_close(struct dq_analyzer *analyzer)
{
	if (analyzer != NULL)
		analyzer->ops->close(analyzer);
}

void
dq_analysis_free(struct dq_analysis *a)
{
	if (a == NULL)
		return;
	json_decref(a->findings);
	json_decref(a->analysis);
	a->findings = NULL;
	a->analysis = NULL;
}

const char *
dq_analyzer_name(const struct dq_analyzer *analyzer)
{
	return analyzer->ops->name;
}

int
dq_analyzer_analyze(struct dq_analyzer *analyzer, const char *sku, const unsigned char *data,
    size_t len, const struct dq_image_info *info, struct dq_analysis *out, struct dq_err *err)
{
	return analyzer->ops->analyze(analyzer, sku, data, len, info, out, err);
}

int
dq_analyzer_check(struct dq_analyzer *analyzer, const char *sku, struct dq_err *err)
{
	return analyzer->ops->check(analyzer, sku, err);
}

/* z of the 99th percentile of the standard normal distribution */
#define Z99 2.3263478740

void
dq_analyzer_test_delay(const char *sku)
{
	static _Thread_local unsigned seed;
	double median = dq_cfg.analyze_delay_ms, p99 = dq_cfg.analyze_delay_p99_ms, u1, u2, z;
	int64_t ms;

	if (dq_cfg.analyze_slow_sku && sku && strcmp(sku, dq_cfg.analyze_slow_sku) == 0 &&
	    dq_cfg.analyze_slow_ms > 0) {
		dq_sleep_ms((int64_t)dq_cfg.analyze_slow_ms);
		return;
	}
	if (median <= 0)
		return;
	if (p99 <= median) {
		dq_sleep_ms((int64_t)median);
		return;
	}
	if (!seed)
		seed = (unsigned)dq_now_ms() ^ (unsigned)(uintptr_t)&seed;
	/* Box-Muller: one standard normal z from two uniforms in (0, 1] */
	u1 = (rand_r(&seed) + 1.0) / (RAND_MAX + 1.0);
	u2 = (rand_r(&seed) + 1.0) / (RAND_MAX + 1.0);
	z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
	ms = (int64_t)(median * exp(z * log(p99 / median) / Z99));
	dq_log(DQ_DEBUG, "test_delay", json_pack("{s:I}", "delay_ms", (json_int_t)ms),
	    "test hook: a model that takes %lld ms", (long long)ms);
	dq_sleep_ms(ms);
}
