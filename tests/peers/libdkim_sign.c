/*
 * libdkim_sign -- sign a message with Alt-N libdkim (Debian libdkim-dev), as
 * the seeds' qmail-remote did (DKIMSignInit / DKIMSignProcess /
 * DKIMSignGetSig2).
 *
 *   libdkim_sign [options] KEYFILE SELECTOR DOMAIN MESSAGE
 *     -c simple|relaxed|simple/relaxed|relaxed/simple   (default relaxed)
 *     -a sha256|sha1                                     (default sha256)
 *     -l          add l=
 *     -t          add t=
 *     -q          add q=dns/txt
 *     -i IDENTITY add i=
 *     -x SECONDS  add x= (now + SECONDS)
 *     -r NAMES    szRequiredHeaders: colon-separated names signed even when
 *                 absent (oversigning)
 *
 * Prints the DKIM-Signature field libdkim made (folded with CRLF, no final
 * line ending) on stdout.  Exit 0 on success; 1 with the libdkim code on
 * stderr when libdkim refuses; 2 on usage or I/O error.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dkim.h>

static int read_file(const char *path, char **data, size_t *len)
{
	FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	size_t cap = 65536, got;

	if (fp == NULL)
		return -1;
	*len = 0;
	*data = malloc(cap + 1);
	while (*data != NULL && (got = fread(*data + *len, 1, cap - *len, fp)) > 0) {
		*len += got;
		if (*len == cap) {
			cap *= 2;
			*data = realloc(*data, cap + 1);
		}
	}
	if (*data == NULL || ferror(fp))
		return -1;
	(*data)[*len] = '\0';
	if (fp != stdin)
		fclose(fp);
	return 0;
}

static int canon(const char *name)
{
	if (strcmp(name, "simple") == 0 || strcmp(name, "simple/simple") == 0)
		return DKIM_SIGN_SIMPLE;
	if (strcmp(name, "relaxed") == 0 || strcmp(name, "relaxed/relaxed") == 0)
		return DKIM_SIGN_RELAXED;
	/* MAKELONG(body, header) in dkim.h's naming: RELAXED_SIMPLE is
	 * MAKELONG(SIMPLE, RELAXED), i.e. c=relaxed/simple. */
	if (strcmp(name, "relaxed/simple") == 0)
		return DKIM_SIGN_RELAXED_SIMPLE;
	if (strcmp(name, "simple/relaxed") == 0)
		return DKIM_SIGN_SIMPLE_RELAXED;
	return -1;
}

int main(int argc, char **argv)
{
	DKIMSignOptions opts;
	DKIMContext ctx;
	char *key, *msg, *sig = NULL;
	size_t keylen, msglen;
	int opt, n;

	memset(&opts, 0, sizeof(opts));
	opts.nCanon = DKIM_SIGN_RELAXED;
	opts.nHash = DKIM_HASH_SHA256;
	opts.nIncludeBodyHash = DKIM_BODYHASH_IETF_1; /* bh= (RFC 6376), not the Allman draft */
	opts.pfnHeaderCallback = NULL;                /* libdkim's own choice of fields */

	while ((opt = getopt(argc, argv, "c:a:ltqi:x:r:")) != -1) {
		switch (opt) {
		case 'c':
			opts.nCanon = canon(optarg);
			if (opts.nCanon < 0) {
				fprintf(stderr, "libdkim_sign: unknown canonicalization %s\n", optarg);
				return 2;
			}
			break;
		case 'a':
			opts.nHash = strcmp(optarg, "sha1") == 0 ? DKIM_HASH_SHA1 : DKIM_HASH_SHA256;
			break;
		case 'l':
			opts.nIncludeBodyLengthTag = 1;
			break;
		case 't':
			opts.nIncludeTimeStamp = 1;
			break;
		case 'q':
			opts.nIncludeQueryMethod = 1;
			break;
		case 'i':
			snprintf(opts.szIdentity, sizeof(opts.szIdentity), "%s", optarg);
			break;
		case 'x':
			opts.expireTime = (unsigned long)time(NULL) + strtoul(optarg, NULL, 10);
			break;
		case 'r':
			snprintf(opts.szRequiredHeaders, sizeof(opts.szRequiredHeaders), "%s", optarg);
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 4) {
		fprintf(stderr, "usage: libdkim_sign [options] KEYFILE SELECTOR DOMAIN MESSAGE\n");
		return 2;
	}
	snprintf(opts.szSelector, sizeof(opts.szSelector), "%s", argv[optind + 1]);
	snprintf(opts.szDomain, sizeof(opts.szDomain), "%s", argv[optind + 2]);
	if (read_file(argv[optind], &key, &keylen) != 0) {
		perror(argv[optind]);
		return 2;
	}
	if (read_file(argv[optind + 3], &msg, &msglen) != 0) {
		perror(argv[optind + 3]);
		return 2;
	}

	n = DKIMSignInit(&ctx, &opts);
	if (n != DKIM_SUCCESS) {
		fprintf(stderr, "libdkim_sign: DKIMSignInit %d %s\n", n, DKIMGetErrorString(n));
		return 1;
	}
	n = DKIMSignProcess(&ctx, msg, (int)msglen);
	if (n == DKIM_SUCCESS)
		n = DKIMSignGetSig2(&ctx, key, &sig);
	if (n != DKIM_SUCCESS || sig == NULL) {
		fprintf(stderr, "libdkim_sign: %d %s\n", n, DKIMGetErrorString(n));
		DKIMSignFree(&ctx);
		return 1;
	}
	fputs(sig, stdout);
	DKIMSignFree(&ctx);
	return 0;
}
