/*
 * libdkim_verify -- verify a message with Alt-N libdkim (Debian libdkim-dev),
 * the library the seeds' qmail-smtpd used; its DKIM_* codes are the seeds'
 * DKVERIFY letters ('A' minus the code).
 *
 *   libdkim_verify KEYTABLE MESSAGE
 *
 * KEYTABLE answers the selector lookups through pfnSelectorCallback, so no
 * DNS is asked: one record per line, "NAME VALUE" (NAME is
 * selector._domainkey.domain), "#" or ";" comments; VALUE "NXDOMAIN" is a
 * permanent DNS failure, "~~text~~" a temporary one, "" an empty TXT string
 * (the format of shared/testdata/README.md).  A name not in the table is a
 * permanent failure too, as libdkim's own DNSGetTXT reports NXDOMAIN.
 *
 * Output, one item per line:
 *   version V
 *   process CODE            first non-zero DKIMVerifyProcess() return, or 0
 *   overall CODE            DKIMVerifyResults()
 *   sig N CODE LETTER DOMAIN
 * LETTER is 'A' - CODE for 0 >= CODE > DKIM_MAX_ERROR, '+' for the
 * non-negative "verified" codes other than 0 (DKIM_SUCCESS_BUT_EXTRA).
 * Exit 0 when the program ran (whatever the verdict), 2 on usage or I/O error.
 *
 * Linked with libdkim_fix.cpp against a copy of libdkim.a (see
 * tests/peers/libdkim.py): Debian's build loses d= and s= of every signature
 * in a broken copy constructor, and every good signature would end as L.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <dkim.h>

/* The selector callback contract (libdkim dns.h, not installed by Debian):
 * return 0 with the TXT data in the buffer, 1 for a temporary failure
 * (DKIM_SELECTOR_DNS_TEMP_FAILURE), 2 for a permanent one, 3 for a name
 * too long. */
#define DNSRESP_SUCCESS 0
#define DNSRESP_TEMP_FAIL 1
#define DNSRESP_PERM_FAIL 2
#define DNSRESP_DOMAIN_NAME_TOO_LONG 3
/* libdkim's own DNSGetTXT refuses longer names before asking DNS. */
#define MAX_DOMAIN 254

struct entry {
	char *name;
	char *value;
};

static struct entry *table;
static size_t ntable;

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

static int load_table(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;

	if (fp == NULL)
		return -1;
	while (getline(&line, &cap, fp) != -1) {
		char *s = trim(line), *sp;

		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		sp = s + strcspn(s, " \t");
		if (*sp != '\0')
			*sp++ = '\0';
		table = realloc(table, (ntable + 1) * sizeof(*table));
		if (table == NULL)
			return -1;
		table[ntable].name = strdup(s);
		table[ntable].value = strdup(trim(sp));
		ntable++;
	}
	free(line);
	fclose(fp);
	return 0;
}

static int DKIM_CALL selector_callback(const char *fqdn, char *buf, int buflen)
{
	size_t i, n;
	const char *value;

	if (strlen(fqdn) > MAX_DOMAIN)
		return DNSRESP_DOMAIN_NAME_TOO_LONG;
	for (i = 0; i < ntable; i++) {
		if (strcasecmp(table[i].name, fqdn) != 0)
			continue;
		value = table[i].value;
		n = strlen(value);
		if (strcmp(value, "NXDOMAIN") == 0)
			return DNSRESP_PERM_FAIL;
		if (n >= 4 && strncmp(value, "~~", 2) == 0 && strcmp(value + n - 2, "~~") == 0)
			return DNSRESP_TEMP_FAIL;
		if (strcmp(value, "\"\"") == 0) {
			value = "";
			n = 0;
		}
		if (buflen <= 0 || n >= (size_t)buflen) {
			/* libdkim 1.0.21 offers 1024 bytes; a longer record is
			 * what its DNSGetTXT cannot hold either. */
			fprintf(stderr, "libdkim_verify: %s: record of %zu bytes > buffer %d\n",
				fqdn, n, buflen);
			return DNSRESP_PERM_FAIL;
		}
		memcpy(buf, value, n + 1);
		return DNSRESP_SUCCESS;
	}
	return DNSRESP_PERM_FAIL;
}

static char letter(int code)
{
	if (code <= 0 && code > DKIM_MAX_ERROR)
		return (char)('A' - code);
	return '+';
}

int main(int argc, char **argv)
{
	DKIMContext ctx;
	DKIMVerifyOptions opts;
	DKIMVerifyDetails *details = NULL;
	char practices[1024];
	char buf[65536];
	size_t got;
	int n, rc, first = 0, count = 0, overall, i;
	FILE *fp;

	if (argc != 3) {
		fprintf(stderr, "usage: libdkim_verify KEYTABLE MESSAGE\n");
		return 2;
	}
	if (load_table(argv[1]) != 0) {
		perror(argv[1]);
		return 2;
	}
	fp = strcmp(argv[2], "-") == 0 ? stdin : fopen(argv[2], "rb");
	if (fp == NULL) {
		perror(argv[2]);
		return 2;
	}

	memset(&opts, 0, sizeof(opts));
	opts.pfnSelectorCallback = selector_callback;
	opts.pfnPracticesCallback = NULL;
	opts.nHonorBodyLengthTag = 1;  /* verify only l= bytes, report extra as code 4 */
	opts.nCheckPractices = 0;      /* no ADSP (RFC 6376 era: historic) */
	opts.nSubjectRequired = 1;     /* dkim.h: "0 = subject is required"; RFC 6376 does not */
	opts.nSaveCanonicalizedData = 0;
	opts.nAllowUnsignedFromHeaders = 0; /* an added, unsigned From: fails the signature */

	n = DKIMVerifyInit(&ctx, &opts);
	if (n != DKIM_SUCCESS) {
		fprintf(stderr, "libdkim_verify: DKIMVerifyInit: %d\n", n);
		return 2;
	}
	while ((got = fread(buf, 1, sizeof(buf), fp)) > 0) {
		rc = DKIMVerifyProcess(&ctx, buf, (int)got);
		if (rc != DKIM_SUCCESS && rc != DKIM_FINISHED_BODY && first == 0)
			first = rc;
	}
	if (ferror(fp)) {
		perror(argv[2]);
		return 2;
	}
	if (fp != stdin)
		fclose(fp);

	overall = DKIMVerifyResults(&ctx);
	DKIMVerifyGetDetails(&ctx, &count, &details, practices);

	printf("version %s\n", DKIMVersion());
	printf("process %d\n", first);
	printf("overall %d\n", overall);
	for (i = 0; i < count; i++)
		printf("sig %d %d %c %s\n", i, details[i].nResult, letter(details[i].nResult),
		       details[i].szSignatureDomain && *details[i].szSignatureDomain ?
		       details[i].szSignatureDomain : "-");
	DKIMVerifyFree(&ctx);
	return 0;
}
