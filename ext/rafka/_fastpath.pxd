# produce_run(batch, i, names, routes, produce, reply) -> index
#   From batch[i] on, for every command that is a 3-element list [name, target, value] with
#   name == RPUSHX (any case; `names` lists the spellings for the pure twin), `routes[target]` a (topic, key) tuple and value not None: calls
#   produce(topic, value, key) then reply(1). Stops at the first command that does not
#   qualify or whose produce raises (the exception is swallowed: the caller's generic path
#   redoes that command and replies with its error). Returns the index of that command, or
#   len(batch). Never reads past len(batch).
cpdef Py_ssize_t produce_run(
    list batch, Py_ssize_t i, frozenset names, dict routes, object produce, object reply
)
