-- Argo CD passes the object as the global `obj` and expects {status=..., message=...}.
-- Each script stands alone (argocd-cm holds one per kind), so this prelude is repeated.
local hs = {}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function result(state, message)
  hs.status = state
  hs.message = message
  return hs
end

-- The operator has not looked at this generation yet: anything status says is about older spec.
local function stale(o)
  local status = o.status
  if status == nil or status.observedGeneration == nil then
    return true
  end
  return o.metadata.generation ~= nil and status.observedGeneration < o.metadata.generation
end

local function describe(c)
  return (c.reason or "") .. ": " .. (c.message or "")
end

-- The state every kind shares; `permanent` holds the Ready=False reasons that retrying cannot
-- fix (someone must change the spec or the platform). `degraded` and `suspended` are the kind's
-- own verdicts (a message, or nil), checked in that order after staleness and Stalled.
local function health(o, permanent, degraded, suspended)
  if stale(o) then
    return result("Progressing", "waiting for the operator to observe generation "
      .. tostring(o.metadata.generation))
  end
  local stalled = condition(o.status, "Stalled")
  if stalled ~= nil and stalled.status == "True" then
    return result("Degraded", describe(stalled))
  end
  local ready = condition(o.status, "Ready")
  if ready ~= nil and ready.status == "False" and permanent[ready.reason] then
    return result("Degraded", describe(ready))
  end
  if degraded ~= nil then
    return result("Degraded", degraded)
  end
  if suspended ~= nil then
    return result("Suspended", suspended)
  end
  local reconciling = condition(o.status, "Reconciling")
  if reconciling ~= nil and reconciling.status == "True" then
    return result("Progressing", describe(reconciling))
  end
  if ready == nil then
    return result("Progressing", "waiting for the Ready condition")
  end
  if ready.status ~= "True" then
    return result("Progressing", describe(ready))
  end
  return result("Healthy", describe(ready))
end
-- End of the prelude shared by the four checks (the tests keep the copies equal).

-- Tenant (cluster-scoped). Ready=False InvalidSpec needs a spec fix; Forbidden and Rejected need
-- the chart's RBAC or the API server's admission fixed (operator/errors.py); SendersUnschedulable
-- needs nodes (e.g. of the dedicated pool) or capacity. Other reasons retry.
local suspended = nil
local flag = condition(obj.status, "Suspended")
if (obj.spec ~= nil and obj.spec.suspended) or (flag ~= nil and flag.status == "True") then
  suspended = flag ~= nil and flag.status == "True" and describe(flag) or "spec.suspended is true"
end
local permanent = {InvalidSpec = true, Forbidden = true, Rejected = true, SendersUnschedulable = true}
return health(obj, permanent, nil, suspended)
