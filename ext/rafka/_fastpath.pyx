# The RPUSHX hot path of rafka, compiled: a run of pipelined RPUSHX commands is produced
# without interpreter overhead per message. Contract in _fastpath.pxd; the pure twin is
# src/pazari/rafka/_fastpath_py.py.
#
# Every command arrives as fresh bytes objects, so set and dict lookups would hash them
# anew each time; the name is compared with memcmp instead, and the route of the previous
# command is reused when the target bytes are equal (a pipeline usually targets one topic).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcmp


cdef inline bint _is_rpushx(object name):
    cdef const char* p
    cdef int k
    if type(name) is not bytes or PyBytes_GET_SIZE(name) != 6:
        return False
    p = PyBytes_AS_STRING(name)
    for k in range(6):
        # ASCII case folding: the command name is case-insensitive (rafka spec §1.1).
        if (p[k] | 0x20) != b"rpushx"[k]:
            return False
    return True


cpdef Py_ssize_t produce_run(
    list batch, Py_ssize_t i, frozenset names, dict routes, object produce, object reply
):
    cdef Py_ssize_t n = len(batch)
    cdef object command, route = None, value, target, last_target = None
    cdef list args
    if i < 0:
        i = 0
    while i < n:
        command = batch[i]
        if type(command) is not list:
            break
        args = <list>command
        if len(args) != 3 or not _is_rpushx(args[0]):
            break
        target = args[1]
        value = args[2]
        if value is None or type(target) is not bytes:
            break
        if last_target is None or not (
            PyBytes_GET_SIZE(target) == PyBytes_GET_SIZE(last_target)
            and memcmp(PyBytes_AS_STRING(target), PyBytes_AS_STRING(last_target),
                       PyBytes_GET_SIZE(target)) == 0
        ):
            route = routes.get(target)
            if route is None:
                break
            last_target = target
        try:
            produce((<tuple>route)[0], value, (<tuple>route)[1])
        except BaseException:
            # Left to the generic handler, which produces it again and replies the error.
            break
        reply(1)
        i += 1
    return i
