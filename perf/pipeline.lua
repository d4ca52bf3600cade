-- wrk script: 16 pipelined GET / requests per write (as in the TechEmpower plaintext test)
init = function(args)
   local r = {}
   for i = 1, 16 do r[i] = wrk.format(nil, "/") end
   req = table.concat(r)
end
request = function() return req end
