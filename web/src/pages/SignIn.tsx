// Sign in: e-mail and password, then, for an account with MFA on, the second step (the
// authenticator's code or one of the recovery codes) with the challenge the API answered.
import { useEffect, useRef, useState, type FormEvent } from "react";
import { ApiError, signIn, signInMfa, type MfaChallenge } from "../api/client";
import { ErrorNotice, Field, buttonClass, fieldError, inputClass, secondaryButtonClass } from "../components/ui";

export function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  // Set when the API asks for a second factor: the rest of the sign-in needs its token.
  const [challenge, setChallenge] = useState<MfaChallenge | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const asked = await signIn(email, password);
      if (asked) setChallenge(asked);
      else onSignedIn();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  if (challenge)
    return (
      <SecondFactor
        challenge={challenge}
        onSignedIn={onSignedIn}
        onRestart={(why) => {
          // The challenge expired or took too many wrong codes: the password step again.
          setChallenge(null);
          setPassword("");
          setError(why);
        }}
      />
    );

  const emailError = fieldError(error, "email");
  const passwordError = fieldError(error, "password");
  const other = emailError || passwordError ? null : error;
  return (
    <main className="flex min-h-screen items-center justify-center p-4">
      <form
        onSubmit={(e) => void submit(e)}
        className="flex w-full max-w-sm flex-col gap-4 rounded-lg border border-slate-300 bg-white p-6 shadow-sm"
        noValidate
      >
        <h1 className="text-2xl font-semibold">Sign in to PenguinMails</h1>
        <Field id="email" label="E-mail address" error={emailError}>
          {(aria) => (
            <input
              {...aria}
              type="email"
              name="email"
              autoComplete="username"
              required
              className={inputClass}
              value={email}
              onChange={(e) => setEmail(e.target.value)}
            />
          )}
        </Field>
        <Field id="password" label="Password" error={passwordError}>
          {(aria) => (
            <input
              {...aria}
              type="password"
              name="password"
              autoComplete="current-password"
              required
              className={inputClass}
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          )}
        </Field>
        <ErrorNotice error={other} />
        <button type="submit" className={buttonClass} disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

function SecondFactor(props: {
  challenge: MfaChallenge;
  onSignedIn: () => void;
  onRestart: (why: unknown) => void;
}) {
  const [recovery, setRecovery] = useState(false);
  const [code, setCode] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), [recovery]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const typed = code.trim();
      await signInMfa(props.challenge.mfaToken, recovery ? { recoveryCode: typed } : { code: typed.replace(/\s/g, "") });
      props.onSignedIn();
    } catch (caught) {
      if (caught instanceof ApiError && caught.body.code === "mfa_token_invalid") props.onRestart(caught);
      else setError(caught);
    } finally {
      setBusy(false);
    }
  }

  // A wrong code is a 401 without a param: it is about the field on screen all the same.
  const wrong = error instanceof ApiError && error.body.code === "mfa_code_invalid" ? error.body.message : undefined;
  const codeError = fieldError(error, "code", "recoveryCode") ?? wrong;
  const id = recovery ? "recovery-code" : "mfa-code";
  return (
    <main className="flex min-h-screen items-center justify-center p-4">
      <form
        onSubmit={(e) => void submit(e)}
        className="flex w-full max-w-sm flex-col gap-4 rounded-lg border border-slate-300 bg-white p-6 shadow-sm"
        noValidate
      >
        <h1 className="text-2xl font-semibold">Two-step sign-in</h1>
        <Field
          id={id}
          label={recovery ? "Recovery code" : "Authentication code"}
          hint={
            recovery
              ? "One of the recovery codes you saved when you turned MFA on; each works once."
              : "The 6-digit code your authenticator app shows now."
          }
          error={codeError}
        >
          {(aria) => (
            <input
              {...aria}
              ref={input}
              name={recovery ? "recoveryCode" : "code"}
              inputMode={recovery ? "text" : "numeric"}
              autoComplete="one-time-code"
              className={inputClass}
              value={code}
              onChange={(e) => setCode(e.target.value)}
            />
          )}
        </Field>
        <ErrorNotice error={codeError ? null : error} />
        <button type="submit" className={buttonClass} disabled={busy}>
          {busy ? "Checking…" : "Continue"}
        </button>
        <button
          type="button"
          className={secondaryButtonClass}
          onClick={() => {
            setRecovery(!recovery);
            setCode("");
            setError(null);
          }}
        >
          {recovery ? "Use a code from the authenticator app" : "Use a recovery code instead"}
        </button>
        <button type="button" className={secondaryButtonClass} onClick={() => props.onRestart(null)}>
          Sign in as someone else
        </button>
      </form>
    </main>
  );
}
