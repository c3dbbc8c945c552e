// The PromQL of the Grafana dashboard, as Grafana would send it: panel queries and the variable's
// metric, with Grafana's variables replaced by values Prometheus accepts. Used by the dashboard's
// own test (promtool) and by the backend's metrics test (every metric named here is exported).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const DASHBOARD_FILE = fileURLToPath(new URL('./elara-sync.json', import.meta.url));

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Array<{ expr: string; refId: string; datasource?: { type: string; uid: string } }>;
  panels?: DashboardPanel[];
}

/** A stand-in value per Grafana variable; an unknown variable stays in place and fails the check. */
const GRAFANA_VALUES: Record<string, string> = { __rate_interval: '2m', __interval: '1m', __range: '6h', job: 'elara-backend', namespace: '.*' };
const expand = (expr: string) => expr.replace(/\$(\w+)/g, (m, name: string) => GRAFANA_VALUES[name] ?? m);

export function readDashboard(): { dashboard: any; panels: DashboardPanel[] } {
  const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8'));
  const panels = (dashboard.panels as DashboardPanel[]).flatMap((p) => [p, ...(p.panels ?? [])]);
  return { dashboard, panels };
}

export function dashboardExpressions(): Array<{ where: string; expr: string }> {
  const { dashboard, panels } = readDashboard();
  const out = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: expand(t.expr) })));
  for (const v of dashboard.templating.list) {
    const m = /^label_values\((.+),\s*\w+\)$/.exec(v.query.query);
    if (!m) throw new Error(`variable ${v.name}: expected label_values(<selector>, <label>), got ${v.query.query}`);
    out.push({ where: `variable ${v.name}`, expr: expand(m[1]!) });
  }
  return out;
}
