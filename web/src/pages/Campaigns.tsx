// Campaigns: the list with live progress (polled), why one stopped, pause and resume, and
// each campaign's details (every condition, every count, the rates); new ones are made on
// #/campaigns/new (CampaignNew.tsx) and edited on #/campaigns/<name>/edit (CampaignEdit.tsx).
import { useState } from "react";
import { all, api, condition, tenantPath, type Campaign } from "../api/client";
import { Badge, Empty, ErrorNotice, PageTitle, ScrollBox, buttonClass, secondaryButtonClass, useLoad } from "../components/ui";

function phase(c: Campaign) {
  if (c.spec.paused) return <Badge tone="warn">Paused</Badge>;
  const p = c.status?.phase;
  if (!p) return <Badge tone="none">Pending</Badge>;
  const tone = p === "Completed" || p === "Sending" ? "ok" : p === "Failed" || p === "Stopped" ? "bad" : "none";
  return <Badge tone={tone}>{p}</Badge>;
}

export default function Campaigns({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "campaigns");
  const campaigns = useLoad(() => all<Campaign>(path), [path], 3000);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [open, setOpen] = useState<string | null>(null);

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
      <p className="mb-4">
        <a className={`${buttonClass} inline-block`} href="#/campaigns/new">
          New campaign
        </a>
      </p>
      <ErrorNotice error={campaigns.error ?? error} />
      {campaigns.data && campaigns.data.length === 0 && (
        <Empty title="No campaign yet">
          Create one with <a className="text-blue-800 underline" href="#/campaigns/new">New campaign</a>, or through
          the API, <code className="break-all">POST /v1/tenants/{tenant}/campaigns</code> (see{" "}
          <a className="text-blue-800 underline" href="/v1/docs">the API docs</a>); it sends from a verified{" "}
          <a className="text-blue-800 underline" href="#/domains">sending domain</a> to a list of{" "}
          <a className="text-blue-800 underline" href="#/contacts">contacts</a>.
        </Empty>
      )}
      {campaigns.data && campaigns.data.length > 0 && (
        <ul className="grid gap-3">
          {campaigns.data.map((c) => {
            const counts = c.status?.counts;
            const progress = c.status?.progress ?? 0;
            // Why it is not sending: an unhealthy Ready first (preflight, a stop rule, the
            // sender's pause), else Sending when it is off for another reason than completion
            // (paused by spec.paused, outside the schedule).
            const ready = condition(c.status, "Ready");
            const sending = condition(c.status, "Sending");
            const stalled =
              ready && ready.status !== "True"
                ? ready
                : sending && sending.status !== "True" && sending.reason !== "Completed"
                  ? sending
                  : undefined;
            return (
              <li key={c.name} className="rounded border border-slate-300 bg-white p-4" aria-label={`Campaign ${c.name}`}>
                <div className="flex flex-wrap items-center gap-2">
                  <h2 className="font-semibold break-all">{c.name}</h2>
                  {phase(c)}
                  {c.status?.phase !== "Completed" && (
                    <a className={`${secondaryButtonClass} ml-auto`} href={`#/campaigns/${encodeURIComponent(c.name)}/edit`}>
                      Edit {c.name}
                    </a>
                  )}
                  <button
                    type="button"
                    className={`${secondaryButtonClass} ${c.status?.phase === "Completed" ? "ml-auto" : ""}`}
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
                {stalled && (
                  <p className="mt-1 text-sm text-amber-900">
                    Why it is not sending: {stalled.message} ({stalled.reason})
                  </p>
                )}
                <button
                  type="button"
                  className={`${secondaryButtonClass} mt-2`}
                  aria-expanded={open === c.name}
                  aria-controls={`details-${c.name}`}
                  onClick={() => setOpen(open === c.name ? null : c.name)}
                >
                  {open === c.name ? "Hide details" : "Show details"}
                  <span className="sr-only"> of {c.name}</span>
                </button>
                {open === c.name && <Details campaign={c} />}
              </li>
            );
          })}
        </ul>
      )}
    </>
  );
}

function percent(rate: number | null | undefined): string {
  return rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(2)} %`;
}

function when(time: string | null | undefined): string {
  return time ? new Date(time).toLocaleString() : "–";
}

/** Everything the status says: each count, the stop-rule rates against their limits, and every
 * condition with its reason and message (why it waits, stopped or failed). */
function Details({ campaign }: { campaign: Campaign }) {
  const { spec, status } = campaign;
  const counts = status?.counts;
  const rows: [string, number][] = counts
    ? [
        ["Planned", counts.total ?? 0],
        ["Queued", counts.queued ?? 0],
        ["Sent", counts.sent ?? 0],
        ["Deferred", counts.deferred ?? 0],
        ["Bounced", counts.bounced ?? 0],
        ["Failed", counts.failed ?? 0],
        ["Unsubscribed", counts.unsubscribed ?? 0],
        ["Complained", counts.complained ?? 0],
      ]
    : [];
  const conditions = status?.conditions ?? [];
  return (
    <div id={`details-${campaign.name}`} className="mt-3 grid gap-3 text-sm">
      <p className="break-words">
        From {spec.from.name ? `${spec.from.name} <${spec.from.address}>` : spec.from.address} to{" "}
        {spec.audience.lists.join(", ")} · started {when(status?.startedAt)} · finished {when(status?.finishedAt)}
      </p>
      <p>
        Bounce rate {percent(status?.bounceRate)} (stops above {percent(spec.stopRules?.maxBounceRate ?? 0.05)}) ·
        complaint rate {percent(status?.complaintRate)} (stops above {percent(spec.stopRules?.maxComplaintRate ?? 0.001)})
      </p>
      {rows.length > 0 && (
        <dl className="grid grid-cols-2 gap-x-4 gap-y-1 sm:grid-cols-4">
          {rows.map(([label, value]) => (
            <div key={label} className="flex justify-between gap-2 border-b border-slate-200">
              <dt>{label}</dt>
              <dd className="font-medium">{value}</dd>
            </div>
          ))}
        </dl>
      )}
      {conditions.length === 0 ? (
        <p>The operator has not reported on it yet.</p>
      ) : (
        <ScrollBox label={`Conditions of ${campaign.name}`}>
          <table className="w-full text-left">
            <caption className="sr-only">Conditions of {campaign.name}</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Check</th>
                <th scope="col" className="p-2">State</th>
                <th scope="col" className="p-2">Why</th>
                <th scope="col" className="p-2">Since</th>
              </tr>
            </thead>
            <tbody>
              {conditions.map((k) => (
                <tr key={k.type} className="border-b border-slate-200 align-top">
                  <td className="p-2">{k.type}</td>
                  <td className="p-2">
                    <Badge tone={k.status === "True" ? "ok" : k.status === "False" ? "warn" : "none"}>{k.status}</Badge>
                  </td>
                  <td className="p-2 break-words">
                    {k.message} {k.reason && <span className="text-slate-700">({k.reason})</span>}
                  </td>
                  <td className="p-2 whitespace-nowrap">{when(k.lastTransitionTime)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </div>
  );
}
