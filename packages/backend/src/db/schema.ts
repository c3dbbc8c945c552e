// The production schema, named exactly as the seed's Prisma models (quoted camelCase). Staging gets
// the same migrations, so the sync engine can copy rows column for column.
import { sql } from 'drizzle-orm';
import { boolean, index, jsonb, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core';

const ts = (name: string) => timestamp(name, { precision: 3, withTimezone: true, mode: 'date' });

export const organization = pgTable('Organization', {
  id: uuid('id').primaryKey().default(sql`gen_random_uuid()`),
  name: text('name').notNull(),
  tier: text('tier').notNull().default('free'),
  apiKey: text('apiKey').notNull().unique(),
  /** SHA-256 (hex) of the API secret; the plaintext is shown once at registration and never stored. */
  apiSecret: text('apiSecret').notNull(),
  isActive: boolean('isActive').notNull().default(true),
  createdAt: ts('createdAt').notNull().defaultNow(),
  updatedAt: ts('updatedAt').notNull().defaultNow(),
});

export const user = pgTable('User', {
  id: uuid('id').primaryKey().default(sql`gen_random_uuid()`),
  /** Stored lowercased, so the unique constraint is case-insensitive in effect. */
  email: text('email').notNull().unique(),
  passwordHash: text('passwordHash').notNull(),
  firstName: text('firstName'),
  lastName: text('lastName'),
  role: text('role').notNull().default('member'),
  organizationId: uuid('organizationId').notNull().references(() => organization.id, { onDelete: 'restrict', onUpdate: 'cascade' }),
  isActive: boolean('isActive').notNull().default(true),
  emailVerified: boolean('emailVerified').notNull().default(false),
  lastLoginAt: ts('lastLoginAt'),
  createdAt: ts('createdAt').notNull().defaultNow(),
  updatedAt: ts('updatedAt').notNull().defaultNow(),
}, (t) => [index('User_organizationId_idx').on(t.organizationId)]);

export const auditLog = pgTable('AuditLog', {
  id: uuid('id').primaryKey().default(sql`gen_random_uuid()`),
  action: text('action').notNull(),
  outcome: text('outcome').notNull().default('success'),
  userId: uuid('userId').references(() => user.id, { onDelete: 'set null' }),
  organizationId: uuid('organizationId').references(() => organization.id, { onDelete: 'set null' }),
  ip: text('ip'),
  userAgent: text('userAgent'),
  requestId: text('requestId'),
  /** Never passwords, tokens or secrets. */
  details: jsonb('details'),
  createdAt: ts('createdAt').notNull().defaultNow(),
}, (t) => [index('AuditLog_organizationId_idx').on(t.organizationId), index('AuditLog_userId_idx').on(t.userId)]);

/** Opaque refresh tokens, stored as SHA-256 hashes. Never synced to staging. */
export const refreshToken = pgTable('RefreshToken', {
  id: uuid('id').primaryKey().default(sql`gen_random_uuid()`),
  tokenHash: text('tokenHash').notNull().unique(),
  familyId: uuid('familyId').notNull(),
  userId: uuid('userId').notNull().references(() => user.id, { onDelete: 'cascade' }),
  expiresAt: ts('expiresAt').notNull(),
  revokedAt: ts('revokedAt'),
  /** Set when the token was rotated; presenting it again is reuse and revokes the family. */
  replacedById: uuid('replacedById'),
  createdAt: ts('createdAt').notNull().defaultNow(),
}, (t) => [index('RefreshToken_familyId_idx').on(t.familyId), index('RefreshToken_userId_idx').on(t.userId)]);

export type Organization = typeof organization.$inferSelect;
export type User = typeof user.$inferSelect;
