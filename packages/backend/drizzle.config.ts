// drizzle-kit generate: writes SQL migrations from src/db/schema.ts into ./drizzle (offline).
import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './drizzle',
});
