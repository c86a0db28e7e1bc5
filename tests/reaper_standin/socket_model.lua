-- LuaSocket as the scripts meet it in REAPER (mavriq-lua-sockets = LuaSocket 3), made strict
-- where a host system may be lenient, around the real module:
--   udp:receivefrom() without a size reads at most 8192 bytes (the rest of the datagram is
--   lost), as LuaSocket's UDP_DATAGRAMSIZE;
--   udp:sendto() takes a numeric address only ("localhost" and names fail), and refuses a
--   datagram over `max_datagram` bytes (default 9216: macOS's loopback limit);
--   socket.dns.toip() knows the spec's `hosts` names first (a studio server's name), then asks
--   the system resolver.
-- Counts go to net (udp_datagrams sent, tcp_connections made) for the tests.

local DEFAULT_RECEIVE = 8192

return function(real, spec, net)
  local max_datagram = spec.max_datagram or 9216
  local hosts = spec.hosts or {}
  local model = setmetatable({}, { __index = real })

  local Udp = {}
  local function forward(name)
    return function(self, ...) return self.real[name](self.real, ...) end
  end
  local UdpMeta = { __index = function(_, name) return Udp[name] or forward(name) end }

  function Udp.sendto(self, data, host, port)
    if type(host) ~= 'string' or not (host:match('^%d+%.%d+%.%d+%.%d+$') or host:find(':', 1, true)) then
      return nil, 'host must be a numeric address'
    end
    if #data > max_datagram then return nil, 'Message too long' end
    net.udp_datagrams = net.udp_datagrams + 1
    return self.real:sendto(data, host, port)
  end

  function Udp.receivefrom(self, size)
    return self.real:receivefrom(size or DEFAULT_RECEIVE)
  end

  function Udp.receive(self, size)
    return self.real:receive(size or DEFAULT_RECEIVE)
  end

  function model.udp()
    local udp, err = real.udp()
    if not udp then return nil, err end
    return setmetatable({ real = udp }, UdpMeta)
  end

  function model.tcp()
    net.tcp_connections = net.tcp_connections + 1
    return real.tcp()
  end

  model.dns = setmetatable({
    toip = function(name)
      if hosts[name] then return hosts[name], { name = name, ip = { hosts[name] } } end
      return real.dns.toip(name)
    end,
  }, { __index = real.dns })

  return model
end
