export async function main(_argv: string[]): Promise<number> {
  console.error('elara-sync: not built yet');
  return 2;
}
