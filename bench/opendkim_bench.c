/*
 * opendkim_bench -- libopendkim's sign and verify rates, for bench/dkim.py.
 *
 *   opendkim_bench sign   KEY.pem SELECTOR DOMAIN ALG MESSAGE SECONDS
 *   opendkim_bench verify RECORD  SELECTOR DOMAIN ALG MESSAGE SECONDS
 *
 * ALG is rsa-sha256 or ed25519-sha256; c=relaxed/relaxed.  sign: one
 * dkim_sign() handle per message, given the PEM text as OpenDKIM's filter
 * does (the key is parsed per message, as libopendkim does for each handle),
 * the message fed with dkim_chunk(), the field taken with dkim_getsighdr_d().
 * verify: one dkim_verify() handle per message; the key record comes from
 * memory through dkim_set_key_lookup() (no DNS, no file: the warm cache a
 * busy verifier has), and every signature must pass (DKIM_SIG_CHECK).
 *
 * Runs for SECONDS of wall time after one warm-up message, then prints
 *   ops N seconds S rate R failures F
 * and, for sign, the last signature field on the next line.
 * Exit 0 when every operation succeeded, 1 otherwise, 2 on usage errors.
 */

#define _DEFAULT_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <opendkim/dkim.h>

static char *record; /* the TXT value served to the verifier */

static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *data;
	long size;

	if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (size = ftell(fp)) < 0)
		return NULL;
	rewind(fp);
	data = malloc((size_t)size + 1);
	if (data == NULL || fread(data, 1, (size_t)size, fp) != (size_t)size)
		return NULL;
	data[size] = '\0';
	fclose(fp);
	*len = (size_t)size;
	return data;
}

static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	(void)dkim;
	(void)sig;
	if (strlen(record) >= buflen)
		return DKIM_CBSTAT_ERROR;
	strcpy((char *)buf, record);
	return DKIM_CBSTAT_CONTINUE;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int sign_one(DKIM_LIB *lib, const char *key, const char *selector, const char *domain,
		    dkim_alg_t alg, char *msg, size_t len, char *out, size_t outlen)
{
	DKIM_STAT stat;
	DKIM *dkim;
	u_char *hdr = NULL;
	size_t hdrlen = 0;
	int ok = 0;

	dkim = dkim_sign(lib, (const u_char *)"bench", NULL, (dkim_sigkey_t)key,
			 (const u_char *)selector, (const u_char *)domain, DKIM_CANON_RELAXED,
			 DKIM_CANON_RELAXED, alg, -1, &stat);
	if (dkim == NULL)
		return 0;
	if (dkim_chunk(dkim, (u_char *)msg, len) == DKIM_STAT_OK &&
	    dkim_chunk(dkim, NULL, 0) == DKIM_STAT_OK && dkim_eom(dkim, NULL) == DKIM_STAT_OK &&
	    dkim_getsighdr_d(dkim, strlen(DKIM_SIGNHEADER) + 2, &hdr, &hdrlen) == DKIM_STAT_OK) {
		ok = 1;
		if (out != NULL)
			snprintf(out, outlen, "%s: %.*s", DKIM_SIGNHEADER, (int)hdrlen, hdr);
	}
	dkim_free(dkim);
	return ok;
}

static int verify_one(DKIM_LIB *lib, char *msg, size_t len)
{
	DKIM_STAT stat;
	DKIM *dkim;
	DKIM_SIGINFO **sigs = NULL;
	int nsigs = 0, i, ok = 0;

	dkim = dkim_verify(lib, (const u_char *)"bench", NULL, &stat);
	if (dkim == NULL)
		return 0;
	if (dkim_chunk(dkim, (u_char *)msg, len) == DKIM_STAT_OK &&
	    dkim_chunk(dkim, NULL, 0) == DKIM_STAT_OK && dkim_eom(dkim, NULL) == DKIM_STAT_OK &&
	    dkim_getsiglist(dkim, &sigs, &nsigs) == DKIM_STAT_OK && nsigs > 0) {
		ok = 1;
		for (i = 0; i < nsigs; i++)
			if (!DKIM_SIG_CHECK(sigs[i]))
				ok = 0;
	}
	dkim_free(dkim);
	return ok;
}

int main(int argc, char **argv)
{
	DKIM_LIB *lib;
	dkim_alg_t alg;
	char *msg, *key = NULL, last[8192] = "";
	size_t len, keylen;
	double seconds, start, elapsed;
	long ops = 0, failures = 0;
	int sign;

	if (argc != 8 || (strcmp(argv[1], "sign") != 0 && strcmp(argv[1], "verify") != 0)) {
		fprintf(stderr, "usage: opendkim_bench sign|verify KEY|RECORD SELECTOR DOMAIN ALG "
				"MESSAGE SECONDS\n");
		return 2;
	}
	sign = strcmp(argv[1], "sign") == 0;
	alg = strcmp(argv[5], "ed25519-sha256") == 0 ? DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256;
	seconds = atof(argv[7]);
	msg = slurp(argv[6], &len);
	if (msg == NULL) {
		perror(argv[6]);
		return 2;
	}
	if (sign) {
		key = slurp(argv[2], &keylen);
		if (key == NULL) {
			perror(argv[2]);
			return 2;
		}
	} else {
		record = argv[2];
	}

	lib = dkim_init(NULL, NULL);
	if (lib == NULL) {
		fprintf(stderr, "opendkim_bench: dkim_init failed\n");
		return 2;
	}
	if (!sign)
		dkim_set_key_lookup(lib, key_lookup);

	/* one warm-up message, not counted */
	if (!(sign ? sign_one(lib, key, argv[3], argv[4], alg, msg, len, last, sizeof last)
		   : verify_one(lib, msg, len)))
		failures++;
	start = now();
	do {
		if (!(sign ? sign_one(lib, key, argv[3], argv[4], alg, msg, len, NULL, 0)
			   : verify_one(lib, msg, len)))
			failures++;
		ops++;
		elapsed = now() - start;
	} while (elapsed < seconds);

	printf("ops %ld seconds %.6f rate %.1f failures %ld\n", ops, elapsed, ops / elapsed, failures);
	if (sign)
		printf("%s\n", last);
	dkim_close(lib);
	return failures == 0 ? 0 : 1;
}
