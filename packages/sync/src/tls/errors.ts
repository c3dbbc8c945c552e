// Connection failures caused by TLS, turned into one sentence that says what failed and a hint that
// says what to change. Node reports a bad certificate as an OpenSSL code ("self-signed certificate
// in certificate chain"), PostgreSQL a plaintext connection to a hostssl-only server as a 28000 with
// "no encryption"; neither says "your sslrootcert is the wrong CA". Messages name files and hosts,
// never a key, a passphrase, a password or a certificate body.
import type { TlsSettings } from './settings.ts';

/** `reason`: the OpenSSL/Node code (SELF_SIGNED_CERT_IN_CHAIN, ERR_TLS_CERT_ALTNAME_INVALID, …) or ours (SERVER_NO_TLS, CONFIG, …). */
export class DatabaseTlsError extends Error {
  constructor(message: string, readonly hint: string, readonly reason: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatabaseTlsError';
  }
}

export function isTlsError(err: unknown, depth = 0): err is DatabaseTlsError {
  if (!(err instanceof Error) || depth > 5) return false;
  return err instanceof DatabaseTlsError || err.name === 'DatabaseTlsError' || isTlsError(err.cause, depth + 1);
}

/** What the caller calls the URL, for hints: `STAGING_DATABASE_URL`, `--to / STAGING_DATABASE_URL`. */
export interface ConnectionLabel {
  /** Prefix of the message, e.g. `staging`. Omitted when the caller prefixes its own. */
  label?: string;
  /** The setting that holds the URL. */
  setting?: string;
}

// OpenSSL verification results meaning "no CA we were given signed this".
const UNTRUSTED = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED',
  'CERT_CHAIN_TOO_LONG', 'INVALID_CA', 'CERT_REJECTED', 'INVALID_PURPOSE',
]);

interface NodeTlsError extends Error {
  code?: string;
  reason?: string;
  host?: string;
  cert?: { subjectaltname?: string; subject?: { CN?: string }; valid_to?: string; valid_from?: string };
  severity?: string;
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

function certNames(cert: NodeTlsError['cert']): string {
  const alt = cert?.subjectaltname?.split(/,\s*/).map((n) => n.replace(/^(DNS|IP Address):/, '')).filter(Boolean) ?? [];
  if (alt.length > 0) return alt.join(', ');
  return cert?.subject?.CN ?? 'no names';
}

/**
 * The DatabaseTlsError for a failed connect, or null when the failure is not about TLS (refused,
 * timeout, password: those keep their own message and the caller's usual hint).
 */
export function explainTlsFailure(err: unknown, s: TlsSettings, where: { host: string; port: number }, who: ConnectionLabel = {}): DatabaseTlsError | null {
  if (!(err instanceof Error)) return null;
  if (err instanceof DatabaseTlsError) return err;
  const e = err as NodeTlsError;
  const setting = who.setting ?? 'the database URL';
  const at = `${where.host}:${where.port}`;
  const prefix = who.label ? `${who.label}: ` : '';
  const make = (what: string, hint: string, reason: string, lead = `TLS to ${at} failed`) => new DatabaseTlsError(`${prefix}${lead}: ${what}`, hint, reason, { cause: err });
  const ca = s.rootCert === 'system' ? 'a CA that Node.js trusts (sslrootcert=system)' : `the CA in sslrootcert=${s.rootCert}`;
  const code = e.code ?? '';

  if (UNTRUSTED.has(code)) {
    return make(`the server's certificate is not signed by ${ca} (${e.message})`,
      `set sslrootcert in ${setting} to the CA certificate (PEM) that signed this server's certificate — for a managed database, the provider's CA bundle; see docs/operations.md#tls`, code);
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = certNames(e.cert);
    return make(`the server's certificate is for ${names}, not for ${e.host ?? where.host} (sslmode=verify-full checks the host name)`,
      `connect with a host name the certificate lists (${names}) in ${setting}; or, if a CA you trust alone is enough, use sslmode=verify-ca`, code);
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    const when = code === 'CERT_HAS_EXPIRED' ? `expired on ${e.cert?.valid_to ?? '?'}` : `is not valid before ${e.cert?.valid_from ?? '?'}`;
    return make(`the server's certificate ${when}`, 'renew the server\'s certificate (docs/operations.md#certificate-rotation); check this machine\'s clock', code);
  }
  if (code === 'CERT_REVOKED') {
    return make('the server\'s certificate is revoked (sslcrl)', 'the server needs a new certificate (docs/operations.md#certificate-rotation)', code);
  }
  if (/^(UNABLE_TO_GET_CRL|CRL_)/.test(code)) {
    return make(`the certificate revocation list cannot be used (${e.message})`, `check sslcrl in ${setting}: the CRL must be issued by the CA in sslrootcert and current`, code);
  }
  if (e.message === 'The server does not support SSL connections') {
    return make(`the server does not accept TLS (ssl = off on the server), and sslmode=${s.mode} requires it`,
      `turn TLS on on the server (ssl = on with a certificate); only on a network you trust, sslmode=prefer in ${setting} would connect without it`, 'SERVER_NO_TLS');
  }
  // PostgreSQL's own refusals, at authentication (SQLSTATE 28000).
  if (code === '28000' && /no encryption/.test(e.message)) {
    return make(`the server accepts only TLS connections (pg_hba.conf hostssl), and sslmode=${s.mode} did not use TLS`,
      `use sslmode=verify-full with sslrootcert=<the server's CA file> in ${setting}`, 'SERVER_REQUIRES_TLS', `${at} refused a connection without TLS`);
  }
  if (code === '28000' && /SSL encryption/.test(e.message)) {
    return make('the server refuses TLS connections for this user and database (pg_hba.conf hostnossl)',
      `allow hostssl for this user in the server's pg_hba.conf (sslmode=disable in ${setting} works only on a trusted network)`, 'SERVER_REFUSES_TLS', `${at} refused a TLS connection`);
  }
  if (code === '28000' && /certificate/i.test(e.message)) {
    return make(`the server rejected the client certificate (${oneLine(e.message)})`,
      `set sslcert and sslkey in ${setting} to a client certificate signed by a CA the server trusts, with CN = the database user`, 'CLIENT_CERT_REJECTED', `${at} refused the login`);
  }
  if (code === 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA' || code === 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE' || code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') {
    return make(`the server rejected the client certificate (${e.message})`,
      `set sslcert and sslkey in ${setting} to a client certificate signed by a CA the server trusts (ssl_ca_file on the server)`, code);
  }
  if (/PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE|WRONG_VERSION_NUMBER/.test(code)) {
    return make(`client and server have no TLS version in common (${e.message}); this client allows ${s.minVersion}${s.maxVersion ? ` to ${s.maxVersion}` : ' and newer'}`,
      `align ssl_min_protocol_version / ssl_max_protocol_version in ${setting} with the server's ssl_min_protocol_version`, code);
  }
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code.startsWith('ERR_OSSL_')) {
    return make(`the TLS handshake failed (${e.message})`, `check sslmode, sslrootcert, sslcert and sslkey in ${setting}; docs/operations.md#tls`, code);
  }
  return null;
}
