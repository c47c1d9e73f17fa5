// Settings → Members: the tenant's members and their roles (change, remove), invitations (the
// token shown once, to pass on to the invitee; revoke). The API's refusals (the last owner, only
// owners touch owners) are shown as they come, next to what was tried.
import { useEffect, useState, type FormEvent } from "react";
import {
  api,
  tenantPath,
  type Invitation,
  type InvitationCreated,
  type Member,
  type Role,
} from "../../api/client";
import { SettingsNav } from "../../components/settings";
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
} from "../../components/ui";

const ROLES: { role: Role; about: string }[] = [
  { role: "owner", about: "everything, including owners and billing" },
  { role: "admin", about: "everything but owners" },
  { role: "member", about: "sends: domains, campaigns, contacts" },
  { role: "viewer", about: "reads only" },
];

export default function Members({ tenant }: { tenant: string }) {
  const base = tenantPath(tenant, "");
  const members = useLoad(() => api<{ data: Member[] }>("GET", `${base}members`), [base]);
  const invitations = useLoad(() => api<{ data: Invitation[] }>("GET", `${base}invitations`), [base]);
  const [invited, setInvited] = useState<InvitationCreated | null>(null);
  // What was tried and the API's answer: "Change the role of a@b: only an owner can ...".
  const [refusal, setRefusal] = useState<{ what: string; error: unknown } | null>(null);

  /** Whether the API did it; a refusal is shown with what was tried. */
  async function attempt(what: string, call: () => Promise<unknown>): Promise<boolean> {
    setRefusal(null);
    let done = true;
    try {
      await call();
    } catch (caught) {
      setRefusal({ what, error: caught });
      done = false;
    }
    await Promise.all([members.reload(), invitations.reload()]);
    return done;
  }

  const pending = (invitations.data?.data ?? []).filter((i) => i.status === "pending");
  return (
    <>
      <PageTitle>Members</PageTitle>
      <SettingsNav current="settings/members" />
      <ErrorNotice error={members.error ?? invitations.error} />
      {refusal && (
        <div role="alert" className="mb-4 rounded border border-red-300 bg-red-50 p-3 text-sm text-red-800">
          <p className="font-medium">{refusal.what}: refused.</p>
          <p>{refusal.error instanceof Error ? refusal.error.message : String(refusal.error)}</p>
        </div>
      )}
      {members.data && (
        <ScrollBox label="Members" className="rounded border border-slate-300 bg-white">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Members</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Member</th>
                <th scope="col" className="p-2">Role</th>
                <th scope="col" className="p-2">MFA</th>
                <th scope="col" className="p-2"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {members.data.data.map((m) => (
                <MemberRow
                  key={m.userId}
                  member={m}
                  onChange={(role) =>
                    attempt(`Change the role of ${m.email} to ${role}`, () =>
                      api("PATCH", `${base}members/${m.userId}`, { role }),
                    )
                  }
                  onRemove={() => {
                    if (!window.confirm(`Remove ${m.email}? Their access to ${tenant} ends at once.`)) return;
                    void attempt(`Remove ${m.email}`, () => api("DELETE", `${base}members/${m.userId}`));
                  }}
                />
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}

      <h2 className="mb-2 mt-6 text-lg font-semibold">Invite someone</h2>
      <Invite
        path={`${base}invitations`}
        onInvited={(made) => {
          setInvited(made);
          void invitations.reload();
        }}
      />
      {invited && (
        <section aria-labelledby="new-invitation" role="status" className="mt-4 rounded border border-green-400 bg-green-50 p-4">
          <h3 id="new-invitation" className="font-semibold">
            Invitation for {invited.email} as {invited.role}
          </h3>
          <p className="text-sm">{invited.emailDelivery.message}</p>
          {invited.token ? (
            <>
              <p className="text-sm">
                Send this token to {invited.email} now: it is shown this once. They accept it (signed in as that
                address, or creating their account) before {new Date(invited.expiresAt).toLocaleString()}.
              </p>
              <div className="mt-2 flex flex-wrap items-center gap-2">
                <code data-testid="invitation-token" className="break-all rounded bg-white p-2">
                  {invited.token}
                </code>
                <CopyButton text={invited.token} label="the invitation token" />
              </div>
            </>
          ) : (
            <p className="text-sm">
              {invited.email} accepts it from the e-mail before {new Date(invited.expiresAt).toLocaleString()}.
            </p>
          )}
          <button type="button" className={`${secondaryButtonClass} mt-2`} onClick={() => setInvited(null)}>
            Done
          </button>
        </section>
      )}

      <h2 className="mb-2 mt-6 text-lg font-semibold">Invitations waiting</h2>
      {invitations.data && pending.length === 0 && (
        <Empty title="No invitation waiting">Invite someone above; they appear in the members once they accept.</Empty>
      )}
      {pending.length > 0 && (
        <ul className="flex flex-col gap-2">
          {pending.map((i) => (
            <li key={i.id} className="flex flex-wrap items-center gap-2 rounded border border-slate-300 bg-white p-3 text-sm">
              <span className="font-medium">{i.email}</span>
              <Badge tone="none">{i.role}</Badge>
              <span className="text-slate-700">until {new Date(i.expiresAt).toLocaleString()}</span>
              <button
                type="button"
                className={`${secondaryButtonClass} ml-auto`}
                onClick={() =>
                  void attempt(`Revoke the invitation of ${i.email}`, () => api("DELETE", `${base}invitations/${i.id}`))
                }
              >
                Revoke<span className="sr-only"> invitation of {i.email}</span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

function MemberRow(props: { member: Member; onChange: (role: Role) => Promise<boolean>; onRemove: () => void }) {
  const m = props.member;
  // A select and a button: arrow keys on a closed select must not change roles one by one.
  const [role, setRole] = useState<Role>(m.role);
  // The role the API now holds (after a change, or another admin's).
  useEffect(() => setRole(m.role), [m.role]);
  const id = `role-${m.userId}`;
  return (
    <tr className="border-b border-slate-200">
      <td className="p-2">{m.email}</td>
      <td className="p-2">
        <div className="flex items-center gap-2">
          <label htmlFor={id} className="sr-only">
            Role of {m.email}
          </label>
          <select
            id={id}
            className="rounded border border-slate-400 bg-white px-2 py-1"
            value={role}
            onChange={(e) => setRole(e.target.value as Role)}
          >
            {ROLES.map((r) => (
              <option key={r.role} value={r.role}>
                {r.role}
              </option>
            ))}
          </select>
          {role !== m.role && (
            <button
              type="button"
              className={secondaryButtonClass}
              onClick={() =>
                void props.onChange(role).then((done) => {
                  // Refused: the select shows the role the member still has.
                  if (!done) setRole(m.role);
                })
              }
            >
              Save<span className="sr-only"> role of {m.email}</span>
            </button>
          )}
        </div>
      </td>
      <td className="p-2">{m.mfaEnabled ? <Badge tone="ok">On</Badge> : <Badge tone="none">Off</Badge>}</td>
      <td className="p-2">
        <button type="button" className={secondaryButtonClass} onClick={props.onRemove}>
          Remove<span className="sr-only"> {m.email}</span>
        </button>
      </td>
    </tr>
  );
}

function Invite({ path, onInvited }: { path: string; onInvited: (made: InvitationCreated) => void }) {
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<Role>("member");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onInvited(await api<InvitationCreated>("POST", path, { email: email.trim(), role }));
      setEmail("");
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const emailError = fieldError(error, "email");
  const roleError = fieldError(error, "role");
  return (
    <form onSubmit={(e) => void submit(e)} className="flex flex-col gap-3 rounded border border-slate-300 bg-white p-4" noValidate>
      <Field id="invite-email" label="E-mail address to invite" error={emailError}>
        {(aria) => (
          <input {...aria} type="email" name="email" className={inputClass} value={email} onChange={(e) => setEmail(e.target.value)} />
        )}
      </Field>
      <Field id="invite-role" label="Role" error={roleError} hint={ROLES.find((r) => r.role === role)?.about}>
        {(aria) => (
          <select {...aria} name="role" className={inputClass} value={role} onChange={(e) => setRole(e.target.value as Role)}>
            {ROLES.map((r) => (
              <option key={r.role} value={r.role}>
                {r.role}
              </option>
            ))}
          </select>
        )}
      </Field>
      <ErrorNotice error={emailError || roleError ? null : error} />
      <div>
        <button type="submit" className={buttonClass} disabled={busy}>
          Invite
        </button>
      </div>
    </form>
  );
}
