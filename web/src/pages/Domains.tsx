// Sending domains: the list with verification state, adding one (records published by hand:
// the manual DNS provider), a domain's records to publish, each with a copy button, and its DKIM
// rotation timeline (the times the operator wrote in status.dkim; nothing computed here), and
// the reply address the mailboxes' server copies inbound mail to (replies recorded).
import { useState, type FormEvent } from "react";
import { all, api, condition, tenantPath, type Schemas, type SendingDomain } from "../api/client";
import {
  Badge,
  CopyButton,
  Empty,
  ErrorNotice,
  Field,
  PageTitle,
  ScrollBox,
  buttonClass,
  fieldError,
  inputClass,
  secondaryButtonClass,
  useLoad,
} from "../components/ui";

type ReplyAddress = Schemas["ReplyAddress"];
type DnsRecord = NonNullable<NonNullable<SendingDomain["status"]>["records"]>[number];
type Dkim = NonNullable<NonNullable<SendingDomain["status"]>["dkim"]>;

interface KeyLife {
  selector: string;
  algorithm: string;
  state: string;
  steps: [string, string | null | undefined][];
}

function verification(domain: SendingDomain) {
  const records = domain.status?.records ?? [];
  if (records.length === 0) return <Badge tone="none">Waiting for the operator</Badge>;
  const verified = records.filter((r) => r.verified).length;
  if (verified === records.length) return <Badge tone="ok">Verified</Badge>;
  return (
    <Badge tone="warn">
      {verified} of {records.length} records verified
    </Badge>
  );
}

export default function Domains({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "sending-domains");
  // Polled: records appear, then verify, as the operator observes DNS.
  const domains = useLoad(() => all<SendingDomain>(path), [path], 5000);
  const [open, setOpen] = useState<string | null>(null);
  const shown = domains.data?.find((d) => d.name === open) ?? null;

  return (
    <>
      <PageTitle>Sending domains</PageTitle>
      <AddDomain path={path} onAdded={(name) => void domains.reload().then(() => setOpen(name))} />
      <ErrorNotice error={domains.error} />
      {domains.data && domains.data.length === 0 && (
        <Empty title="No sending domain yet">
          Add the domain you will send from above: PenguinMails then lists the DNS records (SPF,
          DKIM, DMARC) to publish at your DNS host, and checks them on every nameserver.
        </Empty>
      )}
      {domains.data && domains.data.length > 0 && (
        <ul className="mt-4 divide-y divide-slate-200 rounded border border-slate-300 bg-white">
          {domains.data.map((d) => (
            <li key={d.name} className="flex flex-wrap items-center gap-2 p-3">
              <span className="font-medium break-all">{d.spec.domain}</span>
              {verification(d)}
              <button
                type="button"
                className={`${secondaryButtonClass} ml-auto`}
                aria-expanded={open === d.name}
                aria-controls={`records-${d.name}`}
                onClick={() => setOpen(open === d.name ? null : d.name)}
              >
                {open === d.name ? "Hide records" : "Show records"}
              </button>
            </li>
          ))}
        </ul>
      )}
      {shown && <Records domain={shown} />}
      {shown && <DkimTimeline domain={shown} />}
      {shown && <Replies tenant={tenant} domain={shown.spec.domain} />}
    </>
  );
}

function AddDomain({ path, onAdded }: { path: string; onAdded: (name: string) => void }) {
  const [domain, setDomain] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    const name = domain.trim().toLowerCase();
    try {
      await api("POST", path, { name, spec: { domain: name, dnsProvider: { type: "manual" } } });
      setDomain("");
      onAdded(name);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const domainError = fieldError(error, "spec.domain", "name", "spec");
  return (
    <form onSubmit={(e) => void submit(e)} className="flex flex-wrap items-end gap-3 rounded border border-slate-300 bg-white p-4" noValidate>
      <div className="min-w-0 flex-1 basis-64">
        <Field
          id="new-domain"
          label="Domain to send from"
          hint="e.g. mail.example.com; you publish its records at your DNS host."
          error={domainError}
        >
          {(aria) => (
            <input {...aria} name="domain" className={`${inputClass} w-full`} value={domain} onChange={(e) => setDomain(e.target.value)} />
          )}
        </Field>
      </div>
      <button type="submit" className={buttonClass} disabled={busy}>
        Add domain
      </button>
      <div className="w-full">
        <ErrorNotice error={domainError ? null : error} />
      </div>
    </form>
  );
}

function Records({ domain }: { domain: SendingDomain }) {
  const records: DnsRecord[] = domain.status?.records ?? [];
  const ready = condition(domain.status, "Ready");
  const nameservers = domain.status?.nameservers ?? [];
  return (
    <section id={`records-${domain.name}`} aria-labelledby="records-title" className="mt-4 rounded border border-slate-300 bg-white p-4">
      <h2 id="records-title" className="text-lg font-semibold">
        Records to publish for {domain.spec.domain}
      </h2>
      {ready && <p className="mt-1 text-sm text-slate-700">{ready.message}</p>}
      {nameservers.length > 0 && (
        <p className="mt-1 text-sm text-slate-700">Checked on: {nameservers.join(", ")}</p>
      )}
      {records.length === 0 ? (
        <p className="mt-3 text-sm">
          The operator has not computed the records yet; they appear here within a minute.
        </p>
      ) : (
        <ScrollBox label={`Records of ${domain.spec.domain}`} className="mt-3">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">DNS records of {domain.spec.domain}</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Type</th>
                <th scope="col" className="p-2">Name</th>
                <th scope="col" className="p-2">Value</th>
                <th scope="col" className="p-2">State</th>
              </tr>
            </thead>
            <tbody>
              {records.map((r) => (
                <tr key={`${r.type}-${r.name}-${r.purpose ?? ""}`} className="border-b border-slate-200 align-top">
                  <td className="p-2 font-mono">{r.type}</td>
                  <td className="p-2">
                    <div className="flex items-start gap-2">
                      <code className="break-all">{r.name}</code>
                      <CopyButton text={r.name} label={`name of the ${r.purpose ?? r.type} record`} />
                    </div>
                  </td>
                  <td className="p-2">
                    <div className="flex items-start gap-2">
                      <code className="max-w-md break-all">{r.value}</code>
                      <CopyButton text={r.value} label={`value of the ${r.purpose ?? r.type} record`} />
                    </div>
                  </td>
                  <td className="p-2">
                    {r.verified ? <Badge tone="ok">Verified</Badge> : <Badge tone="warn">Not seen yet</Badge>}
                    {r.diff && <p className="mt-1 text-xs text-slate-700">{r.diff}</p>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </section>
  );
}

function lives(dkim: Dkim | null | undefined): KeyLife[] {
  const current = (dkim?.selectors ?? []).map((s) => ({
    selector: s.selector,
    algorithm: s.algorithm,
    state: s.state,
    steps: [
      ["Created", s.createdAt],
      ["Published", s.publishedAt],
      ["Active", s.activatedAt],
      ["Retiring", s.retiringAt],
      ["Removed", s.removeAt],
    ] as KeyLife["steps"],
  }));
  const removed = (dkim?.removed ?? []).map((r) => ({
    selector: r.selector,
    algorithm: r.algorithm,
    state: "Removed",
    steps: [
      ["Created", r.createdAt],
      ["Published", r.publishedAt],
      ["Active", r.activatedAt],
      ["Retiring", r.retiringAt],
      ["Removed", r.removedAt],
    ] as KeyLife["steps"],
  }));
  return [...current, ...removed];
}

// UTC, to the minute: the operator's times are UTC and the same for every viewer.
function utc(value: string) {
  return `${new Date(value).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function When({ value }: { value: string | null | undefined }) {
  if (!value) return <span className="text-slate-700">not yet</span>;
  const planned = new Date(value).getTime() > Date.now();
  return (
    <>
      <time dateTime={value}>{utc(value)}</time>
      {planned && <span className="text-slate-700"> (planned)</span>}
    </>
  );
}

const STATE_TONE: Record<string, "ok" | "warn" | "none"> = { Active: "ok", Pending: "warn", Retiring: "warn" };

function DkimTimeline({ domain }: { domain: SendingDomain }) {
  const dkim = domain.status?.dkim;
  const keys = lives(dkim);
  return (
    <section aria-labelledby="dkim-title" className="mt-4 rounded border border-slate-300 bg-white p-4">
      <h2 id="dkim-title" className="text-lg font-semibold">
        DKIM key rotation of {domain.spec.domain}
      </h2>
      {dkim?.lastRotation && (
        <p className="mt-1 text-sm text-slate-700">
          Last rotation: <When value={dkim.lastRotation} />
          {dkim.nextRotation && (
            <>
              ; next: <When value={dkim.nextRotation} />
            </>
          )}
        </p>
      )}
      {keys.length === 0 ? (
        <p className="mt-3 text-sm">The operator has not generated the keys yet; they appear here within a minute.</p>
      ) : (
        <ul className="mt-3 space-y-4">
          {keys.map((k) => (
            <li key={k.selector} aria-labelledby={`dkim-${k.selector}`}>
              <h3 id={`dkim-${k.selector}`} className="flex flex-wrap items-center gap-2 font-medium">
                <code className="break-all">{k.selector}</code>
                <span className="text-sm text-slate-700">{k.algorithm}</span>
                <Badge tone={STATE_TONE[k.state] ?? "none"}>{k.state}</Badge>
              </h3>
              <ol aria-label={`Timeline of ${k.selector}`} className="mt-2 grid grid-cols-1 gap-2 text-sm sm:grid-cols-5">
                {k.steps.map(([label, value]) => (
                  <li key={label} className={`rounded border-l-4 p-2 ${value ? "border-blue-700 bg-slate-50" : "border-slate-300"}`}>
                    <span className="block text-xs font-semibold">{label}</span>
                    <When value={value} />
                  </li>
                ))}
              </ol>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function Replies({ tenant, domain }: { tenant: string; domain: string }) {
  const path = tenantPath(tenant, `reply-address?domain=${encodeURIComponent(domain)}`);
  const found = useLoad(() => api<ReplyAddress>("GET", path), [path]);
  return (
    <section aria-labelledby="replies-title" className="mt-4 rounded border border-slate-300 bg-white p-4">
      <h2 id="replies-title" className="text-lg font-semibold">
        Replies to {domain}
      </h2>
      <p className="mt-1 text-sm text-slate-700">
        Replies keep arriving in your mailboxes. To count them, have your mail server send a
        copy of the mailboxes' incoming mail to this address (a BCC rule, a Sieve <code>redirect :copy</code>, or
        a forwarding rule that keeps a copy). Auto-replies are not counted.
      </p>
      <ErrorNotice error={found.error} />
      {found.data && (
        <div className="mt-2 flex items-start gap-2">
          <code className="break-all" data-testid="reply-address">
            {found.data.address}
          </code>
          <CopyButton text={found.data.address} label="reply address" />
        </div>
      )}
    </section>
  );
}
