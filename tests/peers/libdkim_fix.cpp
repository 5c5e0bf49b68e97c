/*
 * libdkim_fix -- the SignatureInfo copy constructor that Debian's libdkim
 * 1:1.0.21-4 lacks.
 *
 * Debian's openssl1.1.patch turned SignatureInfo's two EVP_MD_CTX members
 * into pointers and added a copy constructor that copies only what the
 * original constructor initializes (body counts, selector pointer, status,
 * hash, empty-line count, save flag) and leaves every string, the h= list,
 * l=, c= and x= empty.  CDKIMVerify::ProcessHeaders copies each parsed
 * signature into its list with push_back, so the copy it then verifies has
 * d= and s= empty: libdkim asks for the key "._domainkey." and every
 * well-formed signature ends in DKIM_SELECTOR_DNS_PERM_FAILURE (letter L).
 *
 * The harness links against a copy of /usr/lib/libdkim.a in which that
 * constructor is weakened (objcopy --weaken-symbol) and supplies the
 * member-wise copy below.  The class layout is libdkim 1.0.21's
 * dkimverify.h with the Debian patch applied (checked against the
 * disassembly of the Debian object: the offsets are asserted below); the
 * header itself is not installed, hence this mirror.
 */

#include <cstddef>
#include <string>
#include <vector>

#include <openssl/evp.h>

using std::string;
using std::vector;

class SelectorInfo;

class SignatureInfo {
      public:
	SignatureInfo(const SignatureInfo &other);

	string Header;
	unsigned Version;
	string Domain;
	string Selector;
	string SignatureData;
	string BodyHashData;
	string IdentityLocalPart;
	string IdentityDomain;
	string CanonicalizedData;
	vector<string> SignedHeaders;
	unsigned BodyLength;
	unsigned HeaderCanonicalization;
	unsigned BodyCanonicalization;
	unsigned ExpireTime;
	unsigned VerifiedBodyCount;
	unsigned UnverifiedBodyCount;
	EVP_MD_CTX *m_Hdr_ctx;
	EVP_MD_CTX *m_Bdy_ctx;
	SelectorInfo *m_pSelector;
	int Status;
	int m_nHash;
	unsigned EmptyLineCount;
	bool m_SaveCanonicalizedData;
};

#pragma GCC diagnostic ignored "-Winvalid-offsetof"
static_assert(offsetof(SignatureInfo, Domain) == 0x28, "Domain");
static_assert(offsetof(SignatureInfo, Selector) == 0x48, "Selector");
static_assert(offsetof(SignatureInfo, SignedHeaders) == 0x108, "SignedHeaders");
static_assert(offsetof(SignatureInfo, VerifiedBodyCount) == 0x130, "counts");
static_assert(offsetof(SignatureInfo, m_Hdr_ctx) == 0x138, "m_Hdr_ctx");
static_assert(offsetof(SignatureInfo, m_pSelector) == 0x148, "m_pSelector");
static_assert(offsetof(SignatureInfo, Status) == 0x150, "Status");
static_assert(offsetof(SignatureInfo, EmptyLineCount) == 0x158, "EmptyLineCount");
static_assert(offsetof(SignatureInfo, m_SaveCanonicalizedData) == 0x15c, "save flag");
static_assert(sizeof(SignatureInfo) == 0x160, "size");

SignatureInfo::SignatureInfo(const SignatureInfo &o)
    : Header(o.Header), Version(o.Version), Domain(o.Domain), Selector(o.Selector),
      SignatureData(o.SignatureData), BodyHashData(o.BodyHashData),
      IdentityLocalPart(o.IdentityLocalPart), IdentityDomain(o.IdentityDomain),
      CanonicalizedData(o.CanonicalizedData), SignedHeaders(o.SignedHeaders),
      BodyLength(o.BodyLength), HeaderCanonicalization(o.HeaderCanonicalization),
      BodyCanonicalization(o.BodyCanonicalization), ExpireTime(o.ExpireTime),
      VerifiedBodyCount(o.VerifiedBodyCount), UnverifiedBodyCount(o.UnverifiedBodyCount),
      m_Hdr_ctx(EVP_MD_CTX_new()), m_Bdy_ctx(EVP_MD_CTX_new()), m_pSelector(o.m_pSelector),
      Status(o.Status), m_nHash(o.m_nHash), EmptyLineCount(o.EmptyLineCount),
      m_SaveCanonicalizedData(o.m_SaveCanonicalizedData)
{
	/* As Debian's constructor does: the contexts are still empty when
	 * push_back copies, so copy_ex may decline; nothing to carry over. */
	EVP_MD_CTX_copy_ex(m_Hdr_ctx, o.m_Hdr_ctx);
	EVP_MD_CTX_copy_ex(m_Bdy_ctx, o.m_Bdy_ctx);
}
