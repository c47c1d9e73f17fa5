// The one way a page keeps a form: its values, the API's error mapped to the field its `param`
// names, and whether it is being sent. Pages declare which API params each field shows; an error
// no field claims goes in the form's alert (ErrorNotice), so no message is ever lost.
import { useCallback, useState, type FormEvent } from "react";
import { ApiError } from "../api/client";

/** The API's message when its `param` is one of `params` or inside one of them
 * (`spec.throttle` claims `spec.throttle.perHour` and `spec.audience.lists` claims
 * `spec.audience.lists[0]`); `=spec` claims `spec` itself only (a rule of the whole spec). */
export function errorOf(error: unknown, ...params: string[]): string | undefined {
  if (!(error instanceof ApiError) || !error.body.param) return undefined;
  const param = error.body.param;
  const hit = params.some((p) =>
    p.startsWith("=") ? param === p.slice(1) : param === p || param.startsWith(`${p}.`) || param.startsWith(`${p}[`),
  );
  return hit ? error.body.message : undefined;
}

export interface Form<V> {
  values: V;
  /** Change some values (a patch, so a form of more values is also a form of fewer). */
  set: (patch: Partial<V>) => void;
  /** Replace every value (a form filled from what the API holds). */
  reset: (values: V) => void;
  /** The last submission's error (an ApiError, or a network failure), null when none. */
  error: unknown;
  setError: (error: unknown) => void;
  busy: boolean;
  /** An onSubmit handler: runs `send` with the values, keeping its error for the fields. */
  submit: (send: (values: V) => Promise<void>) => (event: FormEvent) => void;
  /** Each field's message (`{field: [params it shows]}`) and the error no field claimed. */
  errors: <F extends string>(fields: Record<F, string[]>) => { field: Record<F, string | undefined>; other: unknown };
}

export function useForm<V>(initial: V | (() => V)): Form<V> {
  const [values, setValues] = useState<V>(initial);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const set = useCallback((patch: Partial<V>) => setValues((now) => ({ ...now, ...patch })), []);

  function submit(send: (values: V) => Promise<void>) {
    return (event: FormEvent) => {
      event.preventDefault();
      setBusy(true);
      setError(null);
      send(values)
        .catch((caught: unknown) => setError(caught))
        .finally(() => setBusy(false));
    };
  }

  function errors<F extends string>(fields: Record<F, string[]>) {
    const field = {} as Record<F, string | undefined>;
    let claimed = false;
    for (const key of Object.keys(fields) as F[]) {
      field[key] = errorOf(error, ...fields[key]);
      claimed ||= field[key] !== undefined;
    }
    return { field, other: claimed ? null : error };
  }

  return { values, set, reset: setValues, error, setError, busy, submit, errors };
}
