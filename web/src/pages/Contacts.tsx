// Contacts: import a CSV into a list (a progress bar fed by the import job, then the lines it
// skipped, each with its line and field), the tenant's recent imports, the lists with their
// sizes, and the suppression list (check an address, add, remove, browse by reason).
import { useEffect, useRef, useState, type FormEvent } from "react";
import {
  ApiError,
  RawBody,
  all,
  api,
  pageOf,
  tenantPath,
  type BulkSuppressionResult,
  type Contact,
  type ContactImport,
  type ContactList,
  type ImportLineError,
  type Suppression,
  type SuppressionAdded,
  type SuppressionCheck,
} from "../api/client";
import {
  Badge,
  Empty,
  ErrorNotice,
  Field,
  PageTitle,
  ProgressBar,
  ScrollBox,
  ShowMore,
  buttonClass,
  fieldError,
  inputClass,
  secondaryButtonClass,
  useLoad,
  usePaged,
} from "../components/ui";

const REASONS = ["manual", "unsubscribed", "hard_bounce", "complaint"] as const;
const POLL_MS = 500;

export default function Contacts({ tenant }: { tenant: string }) {
  const listsPath = tenantPath(tenant, "contact-lists");
  const lists = useLoad(() => all<ContactList>(listsPath), [listsPath]);
  // Bumped when an import starts or ends: the recent imports are read again.
  const [imports, setImports] = useState(0);
  const changed = () => setImports((n) => n + 1);
  return (
    <>
      <PageTitle>Contacts</PageTitle>
      {/* minmax(0, 1fr) columns: a wide table scrolls in its box instead of widening the page. */}
      <div className="grid grid-cols-1 gap-4 lg:grid-cols-2">
        <ImportCsv
          tenant={tenant}
          lists={lists.data ?? []}
          onStart={changed}
          onDone={() => {
            void lists.reload();
            changed();
          }}
        />
        <Lists path={listsPath} lists={lists} />
      </div>
      <RecentImports path={tenantPath(tenant, "contact-imports")} version={imports} />
      <Suppressions tenant={tenant} />
    </>
  );
}

/** Where an import stands, in percent: rows once the total is known, else bytes read. */
function percentOf(job: ContactImport): number {
  if (job.state !== "running") return 100;
  if (job.rowsTotal) return (100 * job.rowsDone) / job.rowsTotal;
  return job.bytesTotal ? (100 * job.bytesDone) / job.bytesTotal : 0;
}

function ImportCsv({
  tenant,
  lists,
  onStart,
  onDone,
}: {
  tenant: string;
  lists: ContactList[];
  onStart: () => void;
  onDone: () => void;
}) {
  const [listName, setListName] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [fileError, setFileError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [job, setJob] = useState<ContactImport | null>(null);
  const jobPath = job && tenantPath(tenant, `contact-imports/${job.id}`);
  // The tenant's newest import is shown (and followed while it runs) when the page opens, so
  // leaving the page and coming back, or another member's upload, shows where it stands.
  useEffect(() => {
    pageOf<ContactImport>(tenantPath(tenant, "contact-imports"), {}, null, 1).then(
      (page) => setJob((current) => current ?? page.data[0] ?? null),
      setError,
    );
  }, [tenant]);
  const running = job?.state === "running";
  const done = useRef(onDone);
  done.current = onDone;

  // Follow the job until it ends: its progress is written by the API as it reads the file.
  useEffect(() => {
    if (!jobPath || !running) return;
    const timer = setInterval(() => {
      api<ContactImport>("GET", jobPath).then((now) => {
        setJob(now);
        if (now.state !== "running") done.current();
      }, setError);
    }, POLL_MS);
    return () => clearInterval(timer);
  }, [jobPath, running]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(null);
    setFileError(undefined);
    if (!file) {
      setFileError("Choose the CSV file to import: a header row with an email column, then one contact per line.");
      return;
    }
    setBusy(true);
    try {
      const query = new URLSearchParams({ list: listName.trim() });
      const started = await api<ContactImport>(
        "POST",
        `${tenantPath(tenant, "contact-imports")}?${query}`,
        new RawBody(file, "text/csv"),
      );
      setJob(started);
      onStart();
      if (started.state !== "running") onDone();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const listError = fieldError(error, "list");
  const bodyError = fieldError(error, "body", "Content-Type") ?? fileError;
  return (
    <section aria-labelledby="import-title" className="min-w-0 rounded border border-slate-300 bg-white p-4">
      <h2 id="import-title" className="mb-2 text-lg font-semibold">
        Import contacts
      </h2>
      <form onSubmit={(e) => void submit(e)} className="flex flex-col gap-3" noValidate>
        <Field id="import-list" label="Into the list" hint="An existing list, or a new name: the list is created." error={listError}>
          {(aria) => (
            <>
              <input {...aria} name="list" list="known-lists" className={inputClass} value={listName} onChange={(e) => setListName(e.target.value)} />
              <datalist id="known-lists">
                {lists.map((l) => (
                  <option key={l.id} value={l.name} />
                ))}
              </datalist>
            </>
          )}
        </Field>
        <Field id="import-file" label="CSV file" hint="UTF-8; a header row with an email column, every other column a field." error={bodyError}>
          {(aria) => (
            <input
              {...aria}
              type="file"
              name="file"
              accept=".csv,text/csv"
              className="text-sm file:mr-3 file:rounded file:border file:border-slate-400 file:bg-white file:px-3 file:py-1.5"
              onChange={(e) => setFile(e.target.files?.[0] ?? null)}
            />
          )}
        </Field>
        <ErrorNotice error={listError || bodyError ? null : error} />
        <div>
          <button type="submit" className={buttonClass} disabled={busy || running}>
            Upload and import
          </button>
        </div>
      </form>
      {job && jobPath && <ImportProgress job={job} path={jobPath} />}
    </section>
  );
}

function ImportProgress({ job, path }: { job: ContactImport; path: string }) {
  const state =
    job.state === "running" ? (
      <Badge tone="none">Importing</Badge>
    ) : job.state === "succeeded" ? (
      <Badge tone="ok">Imported</Badge>
    ) : (
      <Badge tone="bad">Failed</Badge>
    );
  return (
    <div className="mt-4 flex flex-col gap-2" aria-label="Import" role="group">
      <div className="flex flex-wrap items-center gap-2 text-sm">
        {state}
        <span>into {job.listName}</span>
      </div>
      <ProgressBar label="Import progress" percent={percentOf(job)} />
      <p className="text-sm" aria-live="polite" data-testid="import-summary">
        {job.state === "running" &&
          `${job.rowsDone.toLocaleString()} rows read (${Math.round(job.bytesDone / 1024)} of ${Math.round(job.bytesTotal / 1024)} KiB)`}
        {job.state === "succeeded" &&
          `${job.imported.toLocaleString()} contacts imported, ${job.skipped.toLocaleString()} lines skipped.`}
        {job.state === "failed" && job.failure}
      </p>
      {job.state === "succeeded" && job.skipped > 0 && <SkippedLines path={`${path}/errors`} />}
    </div>
  );
}

/** The tenant's imports, newest first, page by page: each one's list, outcome, progress and
 * the lines it skipped. */
function RecentImports({ path, version }: { path: string; version: number }) {
  const imports = usePaged((cursor) => pageOf<ContactImport>(path, {}, cursor, 10), [path, version]);
  return (
    <section aria-labelledby="imports-title" className="mt-4 min-w-0 rounded border border-slate-300 bg-white p-4">
      <h2 id="imports-title" className="mb-2 text-lg font-semibold">
        Recent imports
      </h2>
      <ErrorNotice error={imports.error} />
      {imports.items && imports.items.length === 0 && (
        <Empty title="No import yet">Import a CSV file above: each import is listed here with its outcome.</Empty>
      )}
      {imports.items && imports.items.length > 0 && (
        <ScrollBox label="Recent imports" className="mt-2">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Contact imports, newest first</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Started</th>
                <th scope="col" className="p-2">List</th>
                <th scope="col" className="p-2">State</th>
                <th scope="col" className="p-2 text-right">Progress</th>
                <th scope="col" className="p-2 text-right">Imported</th>
                <th scope="col" className="p-2 text-right">Skipped lines</th>
              </tr>
            </thead>
            <tbody>
              {imports.items.map((job) => (
                <tr key={job.id} className="border-b border-slate-200 align-top" data-testid="import-row">
                  <td className="p-2">{new Date(job.createdAt).toLocaleString()}</td>
                  <th scope="row" className="p-2 font-medium break-all">{job.listName}</th>
                  <td className="p-2">
                    {job.state === "running" ? (
                      <Badge tone="none">Importing</Badge>
                    ) : job.state === "succeeded" ? (
                      <Badge tone="ok">Imported</Badge>
                    ) : (
                      <Badge tone="bad">Failed</Badge>
                    )}
                    {job.failure && <p className="mt-1 text-slate-700">{job.failure}</p>}
                  </td>
                  <td className="p-2 text-right tabular-nums">{Math.floor(percentOf(job))}%</td>
                  <td className="p-2 text-right tabular-nums">{job.imported.toLocaleString()}</td>
                  <td className="p-2 text-right tabular-nums">{job.skipped.toLocaleString()}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
      <ShowMore paged={imports} what="imports" />
    </section>
  );
}

function SkippedLines({ path }: { path: string }) {
  const lines = usePaged((cursor) => pageOf<ImportLineError>(path, {}, cursor, 100), [path]);
  return (
    <>
      <ErrorNotice error={lines.error} />
      {lines.items && (
        <ScrollBox label="Skipped lines" className="max-h-80 overflow-y-auto rounded border border-slate-300">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Lines skipped by the import</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Line</th>
                <th scope="col" className="p-2">Field</th>
                <th scope="col" className="p-2">Problem</th>
              </tr>
            </thead>
            <tbody>
              {lines.items.map((l) => (
                <tr key={l.line} className="border-b border-slate-200 align-top">
                  <td className="p-2 font-mono">{l.line}</td>
                  <td className="p-2">{l.field ?? "whole line"}</td>
                  <td className="p-2">{l.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
      <ShowMore paged={lines} what="skipped lines" />
    </>
  );
}

function Lists({ path, lists }: { path: string; lists: ReturnType<typeof useLoad<ContactList[]>> }) {
  const [open, setOpen] = useState<string | null>(null);
  const [name, setName] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function create(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("POST", path, { name: name.trim() });
      setName("");
      await lists.reload();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  async function remove(list: ContactList) {
    if (!window.confirm(`Delete the list "${list.name}" and its ${list.contacts} contacts?`)) return;
    setError(null);
    try {
      await api("DELETE", `${path}/${list.id}`);
      await lists.reload();
    } catch (caught) {
      setError(caught);
    }
  }

  const nameError = fieldError(error, "name");
  return (
    <section aria-labelledby="lists-title" className="min-w-0 rounded border border-slate-300 bg-white p-4">
      <h2 id="lists-title" className="mb-2 text-lg font-semibold">
        Lists
      </h2>
      <form onSubmit={(e) => void create(e)} className="flex flex-wrap items-end gap-3" noValidate>
        <div className="min-w-0 flex-1 basis-48">
          <Field id="list-name" label="New list" error={nameError}>
            {(aria) => <input {...aria} name="name" className={`${inputClass} w-full`} value={name} onChange={(e) => setName(e.target.value)} />}
          </Field>
        </div>
        <button type="submit" className={buttonClass} disabled={busy}>
          Create list
        </button>
      </form>
      <div className="mt-3">
        <ErrorNotice error={lists.error ?? (nameError ? null : error)} />
      </div>
      {lists.data && lists.data.length === 0 && (
        <Empty title="No contact list yet">
          Create a list here, or import a CSV file: the list you name is created. Campaigns send to
          lists by name.
        </Empty>
      )}
      {lists.data && lists.data.length > 0 && (
        <ScrollBox label="Contact lists" className="mt-2">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Contact lists</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">List</th>
                <th scope="col" className="p-2 text-right">Contacts</th>
                <th scope="col" className="p-2">Created</th>
                <th scope="col" className="p-2"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {lists.data.map((l) => (
                <tr key={l.id} className="border-b border-slate-200">
                  <th scope="row" className="p-2 font-medium break-all">{l.name}</th>
                  <td className="p-2 text-right tabular-nums">{l.contacts.toLocaleString()}</td>
                  <td className="p-2">{new Date(l.createdAt).toLocaleDateString()}</td>
                  <td className="p-2">
                    <div className="flex flex-wrap gap-2">
                      <button
                        type="button"
                        className={secondaryButtonClass}
                        aria-expanded={open === l.name}
                        aria-controls="list-contacts"
                        onClick={() => setOpen(open === l.name ? null : l.name)}
                      >
                        {open === l.name ? "Hide" : "Show"} contacts<span className="sr-only"> of {l.name}</span>
                      </button>
                      <button type="button" className={secondaryButtonClass} onClick={() => void remove(l)}>
                        Delete {l.name}
                      </button>
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
      {open && lists.data?.some((l) => l.name === open) && (
        <ListContacts
          key={open}
          path={path.replace(/contact-lists$/, "contacts")}
          list={open}
          onChange={() => void lists.reload()}
        />
      )}
    </section>
  );
}

/** A list's contacts, oldest first, page by page; one removed from the list (not erased:
 * that is GDPR erasure, through the API). */
function ListContacts({ path, list, onChange }: { path: string; list: string; onChange: () => void }) {
  const contacts = usePaged((cursor) => pageOf<Contact>(path, { list }, cursor), [path, list]);
  const [error, setError] = useState<unknown>(null);

  async function remove(contact: Contact) {
    if (!window.confirm(`Remove ${contact.email} from the list "${list}"?`)) return;
    setError(null);
    try {
      await api("DELETE", `${path}/${contact.id}`);
      await contacts.reset();
      onChange();
    } catch (caught) {
      setError(caught);
    }
  }

  return (
    <div id="list-contacts" className="mt-3">
      <h3 className="font-semibold break-all">Contacts of {list}</h3>
      <ErrorNotice error={contacts.error ?? error} />
      {contacts.items && contacts.items.length === 0 && (
        <p className="text-sm text-slate-700">No contact in this list yet: import a CSV file into it.</p>
      )}
      {contacts.items && contacts.items.length > 0 && (
        <ScrollBox label={`Contacts of ${list}`} className="mt-1 max-h-96 overflow-y-auto">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Contacts of {list}, oldest first</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">E-mail</th>
                <th scope="col" className="p-2">Fields</th>
                <th scope="col" className="p-2"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {contacts.items.map((c) => (
                <tr key={c.id} className="border-b border-slate-200 align-top">
                  <td className="p-2 break-all">{c.email}</td>
                  <td className="p-2 break-all">
                    {Object.entries(c.fields)
                      .map(([k, v]) => `${k}: ${String(v)}`)
                      .join(", ")}
                  </td>
                  <td className="p-2">
                    <button type="button" className={secondaryButtonClass} onClick={() => void remove(c)}>
                      Remove<span className="sr-only"> {c.email}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
      <ShowMore paged={contacts} what="contacts" />
    </div>
  );
}

function reasonLabel(reason: string): string {
  return reason.replace("_", " ");
}

function Suppressions({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "suppressions");
  const [reason, setReason] = useState("");
  const entries = usePaged((cursor) => pageOf<Suppression>(path, { reason }, cursor), [path, reason]);
  const [email, setEmail] = useState("");
  const [addReason, setAddReason] = useState<string>("manual");
  const [found, setFound] = useState<{ email: string; result: SuppressionCheck } | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function run(action: () => Promise<void>) {
    setBusy(true);
    setError(null);
    setNotice(null);
    try {
      await action();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const check = (address: string) =>
    run(async () => {
      const result = await api<SuppressionCheck>("POST", `${path}/check`, { email: address });
      setFound({ email: address, result });
    });

  const add = () =>
    run(async () => {
      const address = email.trim();
      const added = await api<SuppressionAdded>("POST", path, { email: address, reason: addReason });
      setNotice(
        added.added
          ? `${address} is now suppressed (${reasonLabel(added.reason)}).`
          : `${address} was suppressed already (${reasonLabel(added.reason)}).`,
      );
      setFound({ email: address, result: { suppressed: true, addressHash: added.addressHash, reason: added.reason, createdAt: added.createdAt } });
      await entries.reset();
    });

  const remove = (hash: string, label: string) =>
    run(async () => {
      await api("DELETE", `${path}/${hash}`);
      setNotice(`${label} was removed from the suppression list: it may be mailed again.`);
      if (found?.result.addressHash === hash) setFound({ ...found, result: { suppressed: false, addressHash: hash } });
      await entries.reset();
    });

  const emailError = fieldError(error, "email", "reason");
  return (
    <section aria-labelledby="suppression-title" className="mt-4 rounded border border-slate-300 bg-white p-4">
      <h2 id="suppression-title" className="mb-1 text-lg font-semibold">
        Suppression list
      </h2>
      <p className="mb-3 text-sm text-slate-700">
        Addresses never mailed. Only their keyed hash is stored: search for an address to see whether it is on the list.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void check(email.trim());
        }}
        className="flex flex-wrap items-end gap-3"
        noValidate
      >
        <div className="min-w-0 flex-1 basis-64">
          <Field id="suppression-email" label="E-mail address" error={emailError}>
            {(aria) => (
              <input {...aria} type="email" name="email" autoComplete="off" className={`${inputClass} w-full`} value={email} onChange={(e) => setEmail(e.target.value)} />
            )}
          </Field>
        </div>
        <button type="submit" className={buttonClass} disabled={busy}>
          Search
        </button>
        <div className="flex items-end gap-2">
          <div className="flex flex-col gap-1">
            <label htmlFor="suppression-reason" className="text-sm font-medium">
              Reason
            </label>
            <select id="suppression-reason" className={inputClass} value={addReason} onChange={(e) => setAddReason(e.target.value)}>
              {REASONS.map((r) => (
                <option key={r} value={r}>
                  {reasonLabel(r)}
                </option>
              ))}
            </select>
          </div>
          <button type="button" className={secondaryButtonClass + " py-2"} disabled={busy} onClick={() => void add()}>
            Add to the list
          </button>
        </div>
      </form>
      <div className="mt-3 flex flex-col gap-2" aria-live="polite">
        <ErrorNotice error={emailError ? null : error} />
        {notice && (
          <p role="status" className="rounded border border-green-400 bg-green-50 p-3 text-sm">
            {notice}
          </p>
        )}
        {found && (
          <div className="flex flex-wrap items-center gap-2 rounded border border-slate-300 p-3 text-sm" data-testid="suppression-result">
            {found.result.suppressed ? (
              <>
                <Badge tone="bad">Suppressed</Badge>
                <span className="break-all">
                  {found.email}: {reasonLabel(found.result.reason ?? "manual")}
                  {found.result.createdAt && `, since ${new Date(found.result.createdAt).toLocaleString()}`}
                </span>
                <button
                  type="button"
                  className={`${secondaryButtonClass} ml-auto`}
                  disabled={busy}
                  onClick={() => void remove(found.result.addressHash, found.email)}
                >
                  Remove {found.email}
                </button>
              </>
            ) : (
              <>
                <Badge tone="ok">Not suppressed</Badge>
                <span className="break-all">{found.email} may be mailed.</span>
              </>
            )}
          </div>
        )}
      </div>
      <BulkAdd path={path} reason={addReason} onAdded={() => void entries.reset()} />
      <div className="mt-4 flex flex-wrap items-center gap-2">
        <h3 className="font-semibold">Entries</h3>
        <label htmlFor="suppression-filter" className="ml-auto text-sm">
          Show
        </label>
        <select id="suppression-filter" className="rounded border border-slate-400 px-2 py-1 text-sm" value={reason} onChange={(e) => setReason(e.target.value)}>
          <option value="">every reason</option>
          {REASONS.map((r) => (
            <option key={r} value={r}>
              {reasonLabel(r)}
            </option>
          ))}
        </select>
      </div>
      <ErrorNotice error={entries.error} />
      {entries.items && entries.items.length === 0 && (
        <Empty title={reason ? `No ${reasonLabel(reason)} entry` : "Nobody is suppressed yet"}>
          Addresses that unsubscribe, bounce hard or complain are added as it happens; add one by hand
          above (e.g. someone who asked by e-mail not to be contacted).
        </Empty>
      )}
      {entries.items && entries.items.length > 0 && (
        <ScrollBox label="Suppression entries" className="mt-2">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Suppression entries, oldest first</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Address hash</th>
                <th scope="col" className="p-2">Reason</th>
                <th scope="col" className="p-2">Source</th>
                <th scope="col" className="p-2">Added</th>
                <th scope="col" className="p-2"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {entries.items.map((s) => (
                <tr key={s.addressHash} className="border-b border-slate-200">
                  <td className="p-2 font-mono" title={s.addressHash}>
                    {s.addressHash.slice(0, 12)}…
                  </td>
                  <td className="p-2">{reasonLabel(s.reason)}</td>
                  <td className="p-2">{s.source ?? "—"}</td>
                  <td className="p-2">{new Date(s.createdAt).toLocaleString()}</td>
                  <td className="p-2">
                    <button
                      type="button"
                      className={secondaryButtonClass}
                      disabled={busy}
                      onClick={() => void remove(s.addressHash, `The address ${s.addressHash.slice(0, 12)}…`)}
                    >
                      Remove<span className="sr-only"> entry {s.addressHash.slice(0, 12)}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
      <ShowMore paged={entries} what="entries" />
    </section>
  );
}

/** Many addresses at once, one a line, with the reason chosen above: all or nothing, and the
 * API's `emails[i]` named as the line it came from. */
function BulkAdd({ path, reason, onAdded }: { path: string; reason: string; onAdded: () => void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [lineOf, setLineOf] = useState<number[]>([]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setDone(null);
    const lines = text.split("\n").map((l) => l.trim());
    const numbers = lines.flatMap((l, i) => (l ? [i + 1] : []));
    setLineOf(numbers);
    try {
      const result = await api<BulkSuppressionResult>("POST", `${path}/bulk`, {
        emails: lines.filter(Boolean),
        reason,
      });
      setDone(`${result.added} added, ${result.alreadySuppressed} already on the list (${reasonLabel(reason)}).`);
      setText("");
      onAdded();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  let textError: string | undefined;
  if (error instanceof ApiError && error.body.param) {
    const at = /^emails\[(\d+)\]$/.exec(error.body.param);
    if (at) textError = `Line ${lineOf[Number(at[1])] ?? Number(at[1]) + 1}: ${error.body.message}`;
    else if (error.body.param === "emails") textError = error.body.message;
  }
  return (
    <details className="mt-3 rounded border border-slate-300 p-3">
      <summary className="cursor-pointer text-sm font-medium">Add many addresses at once</summary>
      <form onSubmit={(e) => void submit(e)} className="mt-2 flex flex-col gap-2" noValidate>
        <Field id="bulk-emails" label="Addresses, one a line" hint="Up to 1,000; all are added or none. The reason is the one chosen above." error={textError}>
          {(aria) => <textarea {...aria} name="emails" rows={4} className={inputClass} value={text} onChange={(e) => setText(e.target.value)} />}
        </Field>
        <ErrorNotice error={textError ? null : error} />
        {done && (
          <p role="status" className="text-sm">
            {done}
          </p>
        )}
        <div>
          <button type="submit" className={secondaryButtonClass + " py-2"} disabled={busy}>
            Add these addresses
          </button>
        </div>
      </form>
    </details>
  );
}
