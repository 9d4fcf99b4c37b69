-- wrk load for benches/profile.sh: one request shape per PHASE, every answer's status checked.
--   PHASE  get | filter | list | create | lifecycle | introspect | healthz
--   IDS    file of "id<TAB>userName" lines (get, filter, list, lifecycle); TOKENS file of access tokens (introspect)
--   AUTH   the Authorization header value
-- done() prints "BAD n" (answers with an unexpected status) for profile.sh to check.

local phase = os.getenv("PHASE") or "healthz"
local rows, tokens = {}, {}
local threads = {}
local seq, wrong, flips = 0, 0, {}

local function esc(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", string.byte(ch)) end))
end

local function lines(path, into, split)
  if not path or path == "" then return end
  local f = io.open(path, "r")
  if not f then return end
  f:close()
  for l in io.lines(path) do
    if l ~= "" then
      if split then
        local id, name = l:match("^([^\t]+)\t(.+)$")
        into[#into + 1] = { id = id, name = name }
      else
        into[#into + 1] = l
      end
    end
  end
end

function setup(thread)
  thread:set("nth", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + (nth or 0) * 104729)
  lines(os.getenv("IDS"), rows, true)
  lines(os.getenv("TOKENS"), tokens, false)
  local auth = os.getenv("AUTH")
  if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
  if phase == "create" or phase == "lifecycle" then
    wrk.headers["Content-Type"] = "application/scim+json"
  elseif phase == "introspect" then
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  tag = "p" .. os.time() .. "t" .. (nth or 0)
end

local function any(list) return list[math.random(#list)] end

function request()
  seq = seq + 1
  if phase == "get" then
    return wrk.format("GET", "/scim/v2/Users/" .. any(rows).id)
  elseif phase == "filter" then
    return wrk.format("GET", "/scim/v2/Users?filter=" .. esc('userName eq "' .. any(rows).name .. '"'))
  elseif phase == "list" then
    return wrk.format("GET", "/scim/v2/Users?count=100&startIndex=" .. math.random(math.max(#rows - 100, 1)))
  elseif phase == "create" then
    local n = tag .. "-" .. seq
    return wrk.format("POST", "/scim/v2/Users", nil, string.format(
      '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s@example.net","externalId":"%s",' ..
      '"name":{"givenName":"Pro","familyName":"File %d"},"displayName":"Pro File %d",' ..
      '"emails":[{"value":"%s@example.net","type":"work","primary":true}],"active":true}', n, n, seq, seq, n))
  elseif phase == "lifecycle" then
    -- each thread owns every nth user, so each request really flips its user's state
    local count = #threads > 0 and #threads or 1
    local i = ((seq - 1) * count + (nth or 0)) % #rows + 1
    local id = rows[i].id
    flips[id] = not flips[id]
    local active = flips[id] and "false" or "true"
    return wrk.format("PATCH", "/scim/v2/Users/" .. id, nil,
      '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":' ..
      active .. '}}]}')
  elseif phase == "introspect" then
    return wrk.format("POST", "/oauth2/introspect", nil, "token=" .. any(tokens))
  end
  return wrk.format("GET", "/healthz")
end

function response(status, headers, body)
  local ok = (phase == "create" and status == 201) or (phase ~= "create" and (status == 200 or status == 204))
  if not ok then wrong = wrong + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + (t:get("wrong") or 0) end
  io.write(string.format("BAD %d\n", total))
end
