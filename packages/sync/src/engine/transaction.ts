import type pg from 'pg';

/**
 * Runs `fn` in a transaction on a client checked out of `pool`: `begin` (default BEGIN) first,
 * COMMIT after, ROLLBACK on any error, and the client always goes back to the pool.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query(begin);
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}
