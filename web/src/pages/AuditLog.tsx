// The audit log: every change made to the tenant, newest first, page by page, filtered as the
// API filters it (actor, action or action prefix, target, a time range).
import { useState, type FormEvent } from "react";
import { api, pageOf, tenantPath, type AuditEntry, type Me } from "../api/client";
import {
  Empty,
  ErrorNotice,
  Field,
  PageTitle,
  ScrollBox,
  ShowMore,
  buttonClass,
  fieldError,
  inputClass,
  secondaryButtonClass,
  useLoad,
  usePaged,
} from "../components/ui";

interface Filters {
  mine: boolean;
  action: string;
  target: string;
  since: string;
  until: string;
}

const NONE: Filters = { mine: false, action: "", target: "", since: "", until: "" };

/** A `datetime-local` value (the browser's local time) as an instant with its zone, which the
 * API requires; empty stays unset. */
function instant(local: string): string | undefined {
  if (!local) return undefined;
  const parsed = new Date(local);
  return Number.isNaN(parsed.getTime()) ? local : parsed.toISOString();
}

export default function AuditLog({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "audit-log");
  const me = useLoad(() => api<Me>("GET", "/v1/me"), []);
  const [draft, setDraft] = useState<Filters>(NONE);
  const [applied, setApplied] = useState<Filters>(NONE);
  const myself = me.data ? `user:${me.data.id}` : undefined;
  const entries = usePaged(
    (cursor) =>
      pageOf<AuditEntry>(
        path,
        {
          actor: applied.mine ? myself : undefined,
          action: applied.action.trim(),
          target: applied.target.trim(),
          since: instant(applied.since),
          until: instant(applied.until),
        },
        cursor,
      ),
    [path, applied, myself],
  );
  const set = (field: keyof Filters) => (e: { target: { value: string } }) => setDraft({ ...draft, [field]: e.target.value });

  function apply(event: FormEvent) {
    event.preventDefault();
    setApplied({ ...draft });
  }

  const error = entries.error;
  const filtered = Object.entries(applied).some(([, v]) => Boolean(v));
  const errors = {
    action: fieldError(error, "action"),
    target: fieldError(error, "target"),
    since: fieldError(error, "since"),
    until: fieldError(error, "until"),
  };
  const named = Object.values(errors).some(Boolean);
  return (
    <>
      <PageTitle>Audit log</PageTitle>
      <form onSubmit={apply} className="rounded border border-slate-300 bg-white p-4" noValidate aria-label="Filter the audit log">
        <div className="grid gap-3 sm:grid-cols-2 lg:grid-cols-4">
          <Field id="audit-action" label="Action" hint="e.g. suppression.add, or campaign.* for every campaign action." error={errors.action}>
            {(aria) => <input {...aria} name="action" className={inputClass} value={draft.action} onChange={set("action")} />}
          </Field>
          <Field id="audit-target" label="Target" hint="Exactly, e.g. campaign:launch." error={errors.target}>
            {(aria) => <input {...aria} name="target" className={inputClass} value={draft.target} onChange={set("target")} />}
          </Field>
          <Field id="audit-since" label="From" error={errors.since}>
            {(aria) => <input {...aria} type="datetime-local" name="since" className={inputClass} value={draft.since} onChange={set("since")} />}
          </Field>
          <Field id="audit-until" label="Before" error={errors.until}>
            {(aria) => <input {...aria} type="datetime-local" name="until" className={inputClass} value={draft.until} onChange={set("until")} />}
          </Field>
        </div>
        <div className="mt-3 flex flex-wrap items-center gap-3">
          <label className="flex items-center gap-2 text-sm">
            <input type="checkbox" checked={draft.mine} onChange={(e) => setDraft({ ...draft, mine: e.target.checked })} />
            Only my actions
          </label>
          <button type="submit" className={buttonClass}>
            Apply filters
          </button>
          {filtered && (
            <button
              type="button"
              className={secondaryButtonClass}
              onClick={() => {
                setDraft(NONE);
                setApplied(NONE);
              }}
            >
              Clear filters
            </button>
          )}
        </div>
      </form>
      <div className="mt-4">
        <ErrorNotice error={me.error ?? (named ? null : error)} />
      </div>
      {entries.items && entries.items.length === 0 && (
        <Empty title={filtered ? "No entry matches these filters" : "Nothing recorded yet"}>
          {filtered
            ? "Widen the time range, or use a prefix such as contact_list.* for the action."
            : "Every change made to this tenant (by people or API keys) is recorded here, with who made it and from where."}
        </Empty>
      )}
      {entries.items && entries.items.length > 0 && (
        <ScrollBox label="Audit log entries" className="rounded border border-slate-300 bg-white">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Audit log entries, newest first</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">When</th>
                <th scope="col" className="p-2">Who</th>
                <th scope="col" className="p-2">Action</th>
                <th scope="col" className="p-2">Target</th>
                <th scope="col" className="p-2">From</th>
                <th scope="col" className="p-2">Request</th>
              </tr>
            </thead>
            <tbody>
              {entries.items.map((e) => (
                <tr key={e.id} className="border-b border-slate-200 align-top">
                  <td className="p-2 whitespace-nowrap">{new Date(e.at).toLocaleString()}</td>
                  <td className="p-2 break-all">{e.actor === myself ? "you" : e.actor}</td>
                  <td className="p-2 font-mono">{e.action}</td>
                  <td className="p-2 break-all">{e.target ?? "—"}</td>
                  <td className="p-2">{e.sourceAddress ?? "—"}</td>
                  <td className="p-2 font-mono text-xs break-all">{e.requestId ?? "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
      <ShowMore paged={entries} what="entries" />
    </>
  );
}
