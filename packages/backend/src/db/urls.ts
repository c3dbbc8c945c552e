/** A connection string safe to print: the password is replaced by ***. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const k of [...u.searchParams.keys()]) {
      if (/pass|secret|key/i.test(k)) u.searchParams.set(k, '***');
    }
    return u.toString();
  } catch {
    return '<unparseable database URL>';
  }
}
