// Campaigns: the list with live progress (polled), why one stopped, pause and resume.
import { useState } from "react";
import { all, api, condition, tenantPath, type Campaign } from "../api/client";
import { Badge, Empty, ErrorNotice, PageTitle, secondaryButtonClass, useLoad } from "../components/ui";

function phase(c: Campaign) {
  if (c.spec.paused) return <Badge tone="warn">Paused</Badge>;
  const p = c.status?.phase;
  if (!p) return <Badge tone="none">Pending</Badge>;
  const tone = p === "Completed" || p === "Sending" ? "ok" : p === "Failed" ? "bad" : "none";
  return <Badge tone={tone}>{p}</Badge>;
}

export default function Campaigns({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "campaigns");
  const campaigns = useLoad(() => all<Campaign>(path), [path], 3000);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState<string | null>(null);

  async function toggle(c: Campaign) {
    setBusy(c.name);
    setError(null);
    try {
      const action = c.spec.paused ? "resume" : "pause";
      await api("POST", `${path}/${encodeURIComponent(c.name)}/${action}`);
      await campaigns.reload();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(null);
    }
  }

  return (
    <>
      <PageTitle>Campaigns</PageTitle>
      <ErrorNotice error={campaigns.error ?? error} />
      {campaigns.data && campaigns.data.length === 0 && (
        <Empty title="No campaign yet">
          Create one through the API, <code className="break-all">POST /v1/tenants/{tenant}/campaigns</code>{" "}
          (see <a className="text-blue-800 underline" href="/v1/docs">the API docs</a>); it sends from a verified{" "}
          <a className="text-blue-800 underline" href="#/domains">sending domain</a>.
        </Empty>
      )}
      {campaigns.data && campaigns.data.length > 0 && (
        <ul className="grid gap-3">
          {campaigns.data.map((c) => {
            const counts = c.status?.counts;
            const progress = c.status?.progress ?? 0;
            const stalled = condition(c.status, "Ready");
            return (
              <li key={c.name} className="rounded border border-slate-300 bg-white p-4" aria-label={`Campaign ${c.name}`}>
                <div className="flex flex-wrap items-center gap-2">
                  <h2 className="font-semibold break-all">{c.name}</h2>
                  {phase(c)}
                  <button
                    type="button"
                    className={`${secondaryButtonClass} ml-auto`}
                    disabled={busy === c.name}
                    onClick={() => void toggle(c)}
                  >
                    {c.spec.paused ? `Resume ${c.name}` : `Pause ${c.name}`}
                  </button>
                </div>
                <p className="mt-1 text-sm text-slate-700 break-words">{c.spec.subject}</p>
                <div
                  role="progressbar"
                  aria-label={`Progress of ${c.name}`}
                  aria-valuenow={progress}
                  aria-valuemin={0}
                  aria-valuemax={100}
                  className="mt-3 h-2 rounded bg-slate-200"
                >
                  <div className="h-2 rounded bg-blue-700" style={{ width: `${progress}%` }} />
                </div>
                <p className="mt-2 text-sm">
                  {progress}% · {counts?.sent ?? 0} sent of {counts?.total ?? 0} · {counts?.bounced ?? 0} bounced ·{" "}
                  {counts?.queued ?? 0} queued
                </p>
                {stalled && stalled.status !== "True" && (
                  <p className="mt-1 text-sm text-amber-900">
                    Why it is not sending: {stalled.message} ({stalled.reason})
                  </p>
                )}
              </li>
            );
          })}
        </ul>
      )}
    </>
  );
}
