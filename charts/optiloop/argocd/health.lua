-- Argo CD health check for optiloop.dev/ModelOptimization.
-- Progressing: the operator has not caught up with the spec, the resource is being deleted,
--   or a revision is being built. Healthy: Ready=True computed for the current generation.
-- Degraded: Ready=False for the current generation with a reason that needs a person
--   (an invalid spec, a failed Job, a failed data-quality gate, a child's name held by an
--   object optiloop does not own, serving the cluster cannot do). optiloop never sets
--   Ready=False for transient progress, so anything else stays Progressing.
local hs = {}
local terminal = {InvalidSpec = true, JobFailed = true, DataQualityFailed = true, StageFailed = true, ChildNameTaken = true,
  KServeUnavailable = true, DeploymentModeUnknown = true, UnsupportedInMode = true, KnativeUnavailable = true,
  KedaUnavailable = true, HostNameInvalid = true}
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "being deleted"
  return hs
end
local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready ~= nil and ready.observedGeneration == generation then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = ready.message or ""
    return hs
  end
  if ready.status == "False" and terminal[ready.reason] then
    hs.status = "Degraded"
    hs.message = ready.reason .. ": " .. (ready.message or "")
    return hs
  end
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
elseif obj.status.phase ~= nil then
  hs.message = obj.status.phase
else
  hs.message = "reconciling"
end
return hs
