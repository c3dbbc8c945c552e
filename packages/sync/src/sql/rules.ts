// The anonymization rule catalogue: each rule is a SQL expression over the column, evaluated on
// production inside the source query, so a raw value of a masked column never leaves production.
// Core PostgreSQL only (nothing installed on production): the keyed hash is an HMAC-SHA256 built
// from the built-in sha256(), with the key's inner and outer pads set on the source session by
// set_config with a bound parameter (engine/mask.ts), so the key is never in any SQL text or log.
// Pure: no I/O, unit-tested.

export type RuleName = 'keep' | 'null' | 'hash' | 'email' | 'first_name' | 'last_name' | 'full_name' | 'company_name' | 'token' | 'password_hash';
export type Rule = RuleName | { sql: string } | { token: string };

/**
 * Whether a rule maps distinct inputs to distinct outputs, so it may stand on a column a unique
 * index reads. Keyed hashes: distinct with overwhelming probability (80 bits and more are kept).
 */
export const RULES: Record<RuleName, { unique: boolean; hashed: boolean; describe: string }> = {
  keep: { unique: true, hashed: false, describe: 'the value as it is (for keys, foreign keys, flags, timestamps)' },
  null: { unique: true, hashed: false, describe: 'NULL (NULLs do not collide in a unique index, unless it is NULLS NOT DISTINCT)' },
  hash: { unique: true, hashed: true, describe: 'a keyed hash: hex for text columns, a uuid for uuid columns' },
  email: { unique: true, hashed: true, describe: 'user_<20 hex>@example.com (a valid address at a reserved domain)' },
  first_name: { unique: false, hashed: true, describe: 'a plausible first name, chosen by the keyed hash' },
  last_name: { unique: false, hashed: true, describe: 'a plausible last name, chosen by the keyed hash' },
  full_name: { unique: false, hashed: true, describe: 'a plausible first and last name' },
  company_name: { unique: false, hashed: true, describe: 'a plausible company name' },
  token: { unique: true, hashed: true, describe: 'same prefix and length as the input, the rest keyed-hash hex (an API key stays greppable); the prefix is at most two leading lower-case words ending in _ or - (elara_pk_), or exactly the one given as { token: "elara_pk_" }' },
  password_hash: { unique: false, hashed: false, describe: 'the hash of ELARA_TEST_PASSWORD, so QA can log in to any account with that password' },
};

export const isRuleName = (s: string): s is RuleName => s in RULES;

/** HMAC-SHA256 of the value's text (NULL stays NULL), as bytea. */
export function hmac(value: string): string {
  return `sha256(decode(current_setting('elara.mask_o'), 'hex') || sha256(decode(current_setting('elara.mask_i'), 'hex') || convert_to((${value})::text, 'UTF8')))`;
}

const FIRST = ['Ada', 'Alan', 'Barbara', 'Claude', 'Dana', 'Edsger', 'Frances', 'Grace', 'Hedy', 'Ivan', 'Joan', 'Ken', 'Linus', 'Margaret', 'Niklaus',
  'Ola', 'Radia', 'Sophie', 'Tim', 'Vint', 'Whitfield', 'Xiao', 'Yukihiro', 'Zhang', 'Anita', 'Bjarne', 'Carol', 'Dennis', 'Elena', 'Fran', 'Guido', 'Hal'];
const LAST = ['Lovelace', 'Turing', 'Liskov', 'Shannon', 'Scott', 'Dijkstra', 'Allen', 'Hopper', 'Lamarr', 'Sutherland', 'Clarke', 'Thompson', 'Torvalds',
  'Hamilton', 'Wirth', 'Dahl', 'Perlman', 'Wilson', 'Berners-Lee', 'Cerf', 'Diffie', 'Hellman', 'Matsumoto', 'Rivest', 'Borg', 'Stroustrup', 'Shaw',
  'Ritchie', 'Kernighan', 'Goldberg', 'van Rossum', 'Abelson'];
const ADJ = ['Acme', 'Blue', 'Bright', 'Cedar', 'Delta', 'Evergreen', 'Granite', 'Harbor', 'Iron', 'Juniper', 'Lumen', 'Maple', 'North', 'Oak', 'Pioneer', 'Quartz'];
const NOUN = ['Labs', 'Systems', 'Works', 'Logistics', 'Analytics', 'Foods', 'Health', 'Media', 'Robotics', 'Studios', 'Energy', 'Finance', 'Goods', 'Motors', 'Networks', 'Travel'];
const SUFFIX = ['Inc', 'Ltd', 'GmbH', 'SA', 'LLC', 'AB', 'BV', 'Co'];

const literalArray = (xs: string[]) => `ARRAY[${xs.map((x) => `'${x.replace(/'/g, "''")}'`).join(', ')}]`;
/** One element of a fixed list, chosen by byte `i` of the keyed hash `h`. */
const pick = (xs: string[], h: string, i: number) => `(${literalArray(xs)})[1 + get_byte(${h}, ${i}) % ${xs.length}]`;

/** Types a hex string can be written to. */
const TEXTUAL = /^(text|character varying(\(\d+\))?|citext|character(\(\d+\))?)$/;

/**
 * The source expression for a column under a rule. `column` is the quoted column; `type` the
 * target column's type. Returns an error message instead when the rule cannot produce that type.
 */
/**
 * The token rule: the prefix is kept, the rest becomes keyed-hash hex of the same length (repeated
 * hex when the input is longer than 64 characters). Without an explicit prefix, only up to two
 * leading words of 2 to 10 lower-case letters ending in _ or - count as prefix: a random part may
 * contain _ itself (base64url), and none of it may survive; name the prefix when it is longer.
 */
function tokenExpression(column: string, h: string, prefix?: string): string {
  const p = prefix === undefined
    ? `coalesce(substring(${column} FROM '^((?:[a-z]{2,10}[_-]){1,2})'), '')`
    : `CASE WHEN starts_with(${column}, '${prefix.replace(/'/g, "''")}') THEN '${prefix.replace(/'/g, "''")}' ELSE '' END`;
  const len = `(length(${column}) - length(${p}))`;
  return `${p} || left(repeat(encode(${h}, 'hex'), 1 + ${len} / 64), ${len})`;
}

export function ruleExpression(rule: Rule, column: string, type: string, ctx: { passwordHash: string | null }): { expr: string } | { error: string } {
  if (typeof rule !== 'string') {
    if ('sql' in rule) return { expr: rule.sql };
    if (!TEXTUAL.test(type)) return { error: `rule token writes text, not ${type}` };
    return { expr: tokenExpression(column, hmac(column), rule.token) };
  }
  const h = hmac(column);
  const nullIf = (expr: string) => `CASE WHEN ${column} IS NULL THEN NULL ELSE ${expr} END`;
  switch (rule) {
    case 'keep':
      return { expr: column };
    case 'null':
      return { expr: 'NULL' };
    case 'hash':
      if (type === 'uuid') return { expr: `encode(substring(${h} FROM 1 FOR 16), 'hex')::uuid` };
      if (TEXTUAL.test(type)) return { expr: `encode(${h}, 'hex')` };
      return { error: `rule hash writes hex text or a uuid, not ${type}` };
    case 'password_hash':
      if (!ctx.passwordHash) return { error: 'rule password_hash needs ELARA_TEST_PASSWORD set (the password QA logs in with on this target)' };
      if (!TEXTUAL.test(type)) return { error: `rule password_hash writes text, not ${type}` };
      return { expr: nullIf(`'${ctx.passwordHash.replace(/'/g, "''")}'`) };
    default:
      if (!TEXTUAL.test(type)) return { error: `rule ${rule} writes text, not ${type}` };
  }
  switch (rule) {
    case 'email':
      return { expr: `'user_' || left(encode(${h}, 'hex'), 20) || '@example.com'` };
    case 'first_name':
      return { expr: pick(FIRST, h, 0) };
    case 'last_name':
      return { expr: pick(LAST, h, 1) };
    case 'full_name':
      return { expr: `${pick(FIRST, h, 0)} || ' ' || ${pick(LAST, h, 1)}` };
    case 'company_name':
      return { expr: `${pick(ADJ, h, 0)} || ' ' || ${pick(NOUN, h, 1)} || ' ' || ${pick(SUFFIX, h, 2)}` };
    case 'token':
      return { expr: tokenExpression(column, h) };
  }
  return { error: `unknown rule ${rule as string}` };
}
