// Connection strings carry passwords; anything the doctor prints goes through these first.

/** The URL with its password replaced by `***`, or a fixed placeholder when it does not parse. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|secret|token|key/i.test(key)) u.searchParams.set(key, '***');
    }
    return u.toString();
  } catch {
    return '<unparseable connection string>';
  }
}

/** Where a URL points, for messages: `host:port/database as user`. Never the password. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    const db = decodeURIComponent(u.pathname.replace(/^\//, '')) || '(default database)';
    const user = u.username ? ` as ${decodeURIComponent(u.username)}` : '';
    return `${u.hostname || 'local socket'}:${u.port || '5432'}/${db}${user}`;
  } catch {
    return '<unparseable connection string>';
  }
}

/**
 * Removes every password of `urls` (raw and URL-decoded) and every `scheme://user:password@` form
 * from a message. Driver errors sometimes echo the connection string they were given.
 */
export function scrubSecrets(message: string, urls: Array<string | undefined>): string {
  let out = message;
  for (const url of urls) {
    if (!url) continue;
    let password: string;
    try {
      password = new URL(url).password;
    } catch {
      continue;
    }
    if (!password) continue;
    for (const p of new Set([password, safeDecode(password)])) {
      if (p.length > 0) out = out.split(p).join('***');
    }
  }
  return out.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*):[^@\s]*@/gi, '$1:***@');
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
