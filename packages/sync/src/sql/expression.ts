// Config expressions (transforms and row filters) are pasted into the source query, so they must
// be exactly one SQL expression: nothing that ends the statement, starts another, or escapes the
// parentheses the query wraps them in. This lexer knows PostgreSQL's quoting rules (strings with
// '' and E'\' escapes, dollar quotes, quoted identifiers, comments), so `';'` inside a string is
// fine and `1); DROP TABLE x; --` is not. Pure: no I/O, unit-tested.

export interface ExpressionFacts {
  /** Lower-cased names called as functions (`md5(`, `pg_catalog.left(`), for the volatility check. */
  functions: string[];
  /** True when the expression has a subquery (SELECT / TABLE / VALUES / WITH keyword). */
  readsTables: boolean;
}

/** Returns the facts about a single expression, or throws an Error whose message says what is wrong. */
export function inspectExpression(text: string): ExpressionFacts {
  if (text.trim() === '') throw new Error('is empty');
  const functions: string[] = [];
  let readsTables = false;
  let depth = 0;
  let i = 0;
  const n = text.length;
  let lastWord: string | null = null;
  const fail = (what: string): never => {
    throw new Error(`${what} (at character ${i + 1}); a transform or filter must be one SQL expression`);
  };
  while (i < n) {
    const ch = text[i]!;
    const next = text[i + 1];
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (ch === '-' && next === '-') fail('has a -- comment');
    if (ch === '/' && next === '*') fail('has a /* comment');
    if (ch === ';') fail('has a ";"');
    if (ch === "'" || ((ch === 'E' || ch === 'e') && next === "'")) {
      const escapes = ch !== "'";
      i += escapes ? 2 : 1;
      for (;;) {
        if (i >= n) fail('has an unterminated string');
        const c = text[i]!;
        if (escapes && c === '\\') {
          i += 2;
          continue;
        }
        if (c === "'") {
          if (text[i + 1] === "'") {
            i += 2;
            continue;
          }
          i++;
          break;
        }
        i++;
      }
      lastWord = null;
      continue;
    }
    if (ch === '$') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i));
      if (m) {
        const tag = m[0];
        const end = text.indexOf(tag, i + tag.length);
        if (end < 0) fail('has an unterminated dollar-quoted string');
        i = end + tag.length;
        lastWord = null;
        continue;
      }
      // $1 parameters have no meaning in a config expression.
      if (/^\$\d/.test(text.slice(i))) fail('has a $n parameter');
      i++;
      continue;
    }
    if (ch === '"') {
      const start = i;
      i++;
      for (;;) {
        if (i >= n) fail('has an unterminated quoted identifier');
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            i += 2;
            continue;
          }
          i++;
          break;
        }
        i++;
      }
      lastWord = text.slice(start + 1, i - 1).replace(/""/g, '"').toLowerCase();
      continue;
    }
    if (ch === '(' || ch === '[') {
      if (ch === '(' && lastWord !== null) functions.push(lastWord);
      depth++;
      i++;
      lastWord = null;
      continue;
    }
    if (ch === ')' || ch === ']') {
      depth--;
      if (depth < 0) fail(`closes a "${ch}" it did not open`);
      i++;
      lastWord = null;
      continue;
    }
    const word = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/.exec(text.slice(i));
    if (word) {
      const w = word[0].toLowerCase();
      if (['select', 'table', 'values', 'with'].includes(w)) readsTables = true;
      // A qualified name: keep "schema.name" together for the function list.
      lastWord = lastWord !== null && text[i - 1] === '.' ? `${lastWord}.${w}` : w;
      i += word[0].length;
      continue;
    }
    if (ch === '.' && lastWord !== null && /[A-Za-z_"]/.test(text[i + 1] ?? '')) {
      i++;
      continue;
    }
    i++;
    lastWord = null;
  }
  if (depth !== 0) throw new Error('has an unclosed "(" or "["; a transform or filter must be one SQL expression');
  return { functions: [...new Set(functions)], readsTables };
}
