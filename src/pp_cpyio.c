/* CPython-only: the socket calls of the stream hot path as METH_FASTCALL builtins.

   Why: a cffi API-mode call with several arguments costs ~1000 instructions
   on CPython 3.11 before the syscall (an argument tuple, PyArg_UnpackTuple,
   one converter call per argument, errno save/restore), and passing anything
   but bytes to a ``char *`` needs ``ffi.from_buffer`` (another ~1400).  A
   FASTCALL builtin takes its arguments from the interpreter's stack and reads
   any buffer with PyObject_GetBuffer.  Per echo round trip (perf/cg_tcp.py)
   this and pp_alone below took powpow's server from ~12.9k to ~8.1k instructions
   (CPython 3.11; asyncio: ~15.2k).  PyPy keeps the
   cffi shims: its JIT calls them directly.

   pp_cpy_io_install(addr): ``addr`` is ``id(d)`` of a dict; adds there

     recv_into(fd, buf) -> n >= 0, or -errno     recv(2) into a writable buffer
     recv_bytes(fd, buf) -> bytes, or -errno     recv(2) into the writable buffer
                                                 ``buf`` (scratch), returned as a new
                                                 bytes object (b"" at end of input)
     send(fd, data) -> n >= 0, or -errno         send(2, MSG_NOSIGNAL) of any
                                                 contiguous buffer
     head_lines(buf, start, end, parts, last)    pp_scan_head for the HTTP parser,
       -> (r, lines or None)                     see below
     epoll_wait(epfd, buf, maxevents, timeout)   pp_epoll_wait, as the flat list
       -> [token, events, ...] or -errno         the loop dispatches (see below)
     blank(cls), same_thread(ident)              object.__new__(cls) and
                                                 ident == get_ident() as specialised
                                                 calls (the HTTP server, per request)

   Same contract as the cffi shims in pp_sys.c (which these call): EINTR is
   retried inside (epoll_wait: returned, see below), EAGAIN is a value; the GIL is released around the syscall
   when other threads exist (a buffer export keeps a bytearray from being
   resized meanwhile), see pp_alone.  Returns
   0, or -1 under PyPy (the caller then keeps the cffi path).  Their pure
   twins are in powpow/_ffi/_sock.py. */
#ifdef Py_LIMITED_API
#  undef Py_LIMITED_API
#endif
#include <Python.h>
#include "powpow.h"

int pp_cpy_io_install(intptr_t addr);

#ifndef PYPY_VERSION
/* Only release the GIL when another thread could use it, and only around
   calls that cannot block (non-blocking sockets, a zero-timeout poll):
   releasing and re-taking the GIL (two mutexes and a condition variable)
   costs ~400 instructions per call, a tenth of an echo round trip, for
   nothing in a single-threaded server.  A thread that C code creates and
   attaches (PyGILState_Ensure) joins the thread list without the GIL, so
   "alone" can be stale; such a thread then waits for the GIL for the length
   of one non-blocking call, never longer (blocking waits always release it). */
static int pp_alone(void) {
    PyThreadState *ts = PyThreadState_Get();
    return PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(ts)) == ts && PyThreadState_Next(ts) == NULL;
}

#define PP_SYSCALL(stmt) do { \
        if (pp_alone()) { stmt; } \
        else { Py_BEGIN_ALLOW_THREADS stmt; Py_END_ALLOW_THREADS } \
    } while (0)

static int pp_fd_arg(PyObject *o, int *fd) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "fd out of range");
        return -1;
    }
    *fd = (int)v;
    return 0;
}

static PyObject *pp_io_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    int64_t r;
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send(fd, data) takes 2 arguments");
        return NULL;
    }
    if (pp_fd_arg(args[0], &fd) < 0) return NULL;
    if (PyBytes_CheckExact(args[1])) {
        const char *p = PyBytes_AS_STRING(args[1]);
        size_t n = (size_t)PyBytes_GET_SIZE(args[1]);
        PP_SYSCALL(r = pp_send(fd, p, n));
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
        PP_SYSCALL(r = pp_send(fd, (const char *)view.buf, (size_t)view.len));
        PyBuffer_Release(&view);
    }
    return PyLong_FromLongLong((long long)r);
}

static PyObject *pp_io_recv_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    int64_t r;
    Py_buffer view;
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_into(fd, buf) takes 2 arguments");
        return NULL;
    }
    if (pp_fd_arg(args[0], &fd) < 0) return NULL;
    if (PyByteArray_CheckExact(args[1]) && pp_alone()) {  /* as in recv_bytes */
        r = pp_recv(fd, PyByteArray_AS_STRING(args[1]), (size_t)PyByteArray_GET_SIZE(args[1]));
        return PyLong_FromLongLong((long long)r);
    }
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) return NULL;
    PP_SYSCALL(r = pp_recv(fd, (char *)view.buf, (size_t)view.len));
    PyBuffer_Release(&view);
    return PyLong_FromLongLong((long long)r);
}

static PyObject *pp_io_recv_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    int64_t r;
    Py_buffer view;
    PyObject *res;
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_bytes(fd, buf) takes 2 arguments");
        return NULL;
    }
    if (pp_fd_arg(args[0], &fd) < 0) return NULL;
    if (PyByteArray_CheckExact(args[1]) && pp_alone()) {
        /* The usual receive buffer, and no other thread can resize it while the
           GIL is held throughout: no buffer export (~50 instructions a read). */
        char *p = PyByteArray_AS_STRING(args[1]);
        r = pp_recv(fd, p, (size_t)PyByteArray_GET_SIZE(args[1]));
        if (r >= 0) return PyBytes_FromStringAndSize(p, (Py_ssize_t)r);
        return PyLong_FromLongLong((long long)r);
    }
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) return NULL;
    PP_SYSCALL(r = pp_recv(fd, (char *)view.buf, (size_t)view.len));
    /* A copy of what arrived (small reads come from pymalloc, cheaper than
       allocating the full size and shrinking it as os.read does). */
    if (r >= 0)
        res = PyBytes_FromStringAndSize((const char *)view.buf, (Py_ssize_t)r);
    else
        res = PyLong_FromLongLong((long long)r);
    PyBuffer_Release(&view);
    return res;
}

/* head_lines(buf, start, end, parts, last) -> (r, lines)

   pp_scan_head over ``buf[start:end]`` (``buf``: bytes, or any contiguous buffer), for the HTTP
   parser's hot path (issue 13): the cffi call of pp_scan_head cost ~1000
   instructions in argument conversion, and reading the offsets back (a struct
   unpack behind a dict lookup) a few hundred more.  ``parts`` is a
   HeadScratch's ``parts``: (linebuf, cols, mem), three bytearrays that receive
   out[], colons[] and the signature (max_out = len(linebuf) / 4, sig_cap =
   len(mem)); ``last``: bytes or None.  ``r`` is pp_scan_head's value; ``lines``
   is a tuple of out[:n] when r has PP_HEAD_SIG (a complete, clean head), else
   None (the caller then reads linebuf).  The pure twin is ``head_lines`` in
   powpow/_ffi/__init__.py. */
static PyObject *pp_io_head_lines(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t start, end, blen, last_len = -1;
    PyObject *parts, *lb, *cb, *mb, *lines, *res, *rr;
    const char *last = NULL;
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "head_lines(buf, start, end, parts, last) takes 5 arguments");
        return NULL;
    }
    Py_buffer view;
    const char *b;
    int have_view = 0;
    if (PyBytes_CheckExact(args[0])) {
        b = PyBytes_AS_STRING(args[0]);
        blen = PyBytes_GET_SIZE(args[0]);
    } else {
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
        have_view = 1;
        b = (const char *)view.buf;
        blen = view.len;
    }
    res = NULL;
    start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) goto done;
    end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred()) goto done;
    if (start < 0 || end < start || end > blen) {
        PyErr_SetString(PyExc_ValueError, "head_lines: start/end out of range");
        goto done;
    }
    parts = args[3];
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 3) {
        PyErr_SetString(PyExc_TypeError, "head_lines: parts must be (linebuf, cols, mem)");
        goto done;
    }
    lb = PyTuple_GET_ITEM(parts, 0);
    cb = PyTuple_GET_ITEM(parts, 1);
    mb = PyTuple_GET_ITEM(parts, 2);
    if (!PyByteArray_CheckExact(lb) || !PyByteArray_CheckExact(cb) || !PyByteArray_CheckExact(mb)
            || PyByteArray_GET_SIZE(cb) < PyByteArray_GET_SIZE(lb) || PyByteArray_GET_SIZE(lb) < 8) {
        PyErr_SetString(PyExc_TypeError, "head_lines: parts must be three bytearrays, cols as long as linebuf");
        goto done;
    }
    if (args[4] != Py_None) {
        if (!PyBytes_CheckExact(args[4])) {
            PyErr_SetString(PyExc_TypeError, "head_lines: last must be bytes or None");
            goto done;
        }
        last = PyBytes_AS_STRING(args[4]);
        last_len = PyBytes_GET_SIZE(args[4]);
    }
    uint32_t *out = (uint32_t *)PyByteArray_AS_STRING(lb);
    Py_ssize_t cap = PyByteArray_GET_SIZE(lb) / 4;
    int64_t r = pp_scan_head(b, (int64_t)start, (int64_t)end, out,
                             cap > INT_MAX ? INT_MAX : (int)cap, (uint32_t *)PyByteArray_AS_STRING(cb),
                             PyByteArray_AS_STRING(mb), (int64_t)PyByteArray_GET_SIZE(mb), last, last_len);
    rr = PyLong_FromLongLong((long long)r);
    if (rr == NULL) goto done;
    if (r & PP_HEAD_SIG) {
        Py_ssize_t n = (Py_ssize_t)(r & 0xFFFFFFF);
        lines = PyTuple_New(n);
        if (lines == NULL) {
            Py_DECREF(rr);
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyLong_FromUnsignedLong((unsigned long)out[i]);
            if (v == NULL) {
                Py_DECREF(lines);
                Py_DECREF(rr);
                goto done;
            }
            PyTuple_SET_ITEM(lines, i, v);
        }
    } else {
        lines = Py_None;
        Py_INCREF(lines);
    }
    res = PyTuple_New(2);
    if (res == NULL) {
        Py_DECREF(lines);
        Py_DECREF(rr);
        goto done;
    }
    PyTuple_SET_ITEM(res, 0, rr);
    PyTuple_SET_ITEM(res, 1, lines);
done:
    if (have_view) PyBuffer_Release(&view);
    return res;
}

/* epoll_wait(epfd, buf, maxevents, timeout_ms) -> [token, events, ...] or -errno

   pp_epoll_wait into ``buf`` (a writable buffer of at least 16 * maxevents
   bytes, the poller's preallocated array), returned as the flat list the
   loop dispatches from (see powpow/poller/__init__.py): one call instead of a
   cffi call with four converted arguments and ``ffi.unpack``'s per-item type
   dispatch (~150 instructions an event on CPython 3.11).  A wait that may
   sleep (timeout_ms != 0) always releases the GIL: a thread that C code
   attaches while we wait (PyGILState_Ensure: a ctypes/cffi callback, a C
   library's worker) must not wait for our timeout.  Only the non-blocking
   poll keeps it when the loop is alone (see pp_alone).  A signal (EINTR)
   runs the Python handlers at once (their exception propagates: Ctrl-C)
   and returns no events.  Twin:
   NativeEpoll.poll's cffi path (powpow/poller/epoll.py). */
static PyObject *pp_io_epoll_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int epfd, maxevents, timeout_ms, r, i;
    long v;
    Py_buffer view;
    PyObject *lst;
    int64_t *out;
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "epoll_wait(epfd, buf, maxevents, timeout_ms) takes 4 arguments");
        return NULL;
    }
    if (pp_fd_arg(args[0], &epfd) < 0) return NULL;
    v = PyLong_AsLong(args[2]);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v < 1 || v > INT_MAX / 16) {
        PyErr_SetString(PyExc_ValueError, "epoll_wait: maxevents out of range");
        return NULL;
    }
    maxevents = (int)v;
    v = PyLong_AsLong(args[3]);
    if (v == -1 && PyErr_Occurred()) return NULL;
    timeout_ms = v < 0 ? -1 : (v > INT_MAX ? INT_MAX : (int)v);
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) return NULL;
    if (view.len < (Py_ssize_t)16 * maxevents) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "epoll_wait: buf is smaller than 16 * maxevents bytes");
        return NULL;
    }
    out = (int64_t *)view.buf;
    if (timeout_ms == 0) {
        PP_SYSCALL(r = pp_epoll_wait(epfd, out, maxevents, 0));
    } else {
        Py_BEGIN_ALLOW_THREADS
        r = pp_epoll_wait(epfd, out, maxevents, timeout_ms);
        Py_END_ALLOW_THREADS
    }
    if (r < 0) {
        PyBuffer_Release(&view);
        if (r == -EINTR) {  /* a signal: run its Python handler now (Ctrl-C raises), else no events */
            if (PyErr_CheckSignals() < 0) return NULL;
            return PyList_New(0);
        }
        return PyLong_FromLong(r);
    }
    lst = PyList_New(2 * (Py_ssize_t)r);
    for (i = 0; lst != NULL && i < 2 * r; i++) {
        PyObject *o = PyLong_FromLongLong((long long)out[i]);
        if (o == NULL) {
            Py_CLEAR(lst);
            break;
        }
        PyList_SET_ITEM(lst, i, o);
    }
    PyBuffer_Release(&view);
    return lst;
}

/* blank(cls) -> an instance of cls, its __init__ not run: object.__new__(cls) for a
   class that inherits object's __new__ (the HTTP server's Request and Response,
   made once per request).  A METH_O builtin is a specialised call on CPython 3.11;
   object.__new__ goes through tp_new_wrapper and an argument tuple (~200
   instructions more).  Twin: object.__new__ (powpow/_ffi/__init__.py). */
static PyObject *pp_empty_args;

static PyObject *pp_io_blank(PyObject *self, PyObject *cls) {
    PyTypeObject *t;
    (void)self;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "blank(cls): cls must be a class");
        return NULL;
    }
    t = (PyTypeObject *)cls;
    if (t->tp_new != PyBaseObject_Type.tp_new) {
        PyErr_Format(PyExc_TypeError, "blank(cls): %s has its own __new__", t->tp_name);
        return NULL;
    }
    return t->tp_new(t, pp_empty_args, NULL);
}

/* same_thread(ident) -> ident == _thread.get_ident(), as a METH_O builtin (a
   specialised call; get_ident is METH_NOARGS, which 3.11 does not specialise,
   and the == of two thread idents, big ints, is not specialised either). */
static PyObject *pp_io_same_thread(PyObject *self, PyObject *ident) {
    unsigned long v;
    (void)self;
    v = PyLong_AsUnsignedLong(ident);
    if (v == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_FALSE;  /* not a thread ident (e.g. None before the first feed) */
    }
    if (v == PyThread_get_thread_ident()) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

static PyMethodDef pp_io_methods[] = {
    {"epoll_wait", (PyCFunction)(void (*)(void))pp_io_epoll_wait, METH_FASTCALL,
     "epoll_wait(epfd, buf, maxevents, timeout_ms) -> [token, events, ...] or -errno"},
    {"blank", (PyCFunction)pp_io_blank, METH_O, "blank(cls) -> object.__new__(cls)"},
    {"same_thread", (PyCFunction)pp_io_same_thread, METH_O, "same_thread(ident) -> ident == get_ident()"},
    {"send", (PyCFunction)(void (*)(void))pp_io_send, METH_FASTCALL, "send(fd, data) -> n or -errno"},
    {"recv_into", (PyCFunction)(void (*)(void))pp_io_recv_into, METH_FASTCALL, "recv_into(fd, buf) -> n or -errno"},
    {"recv_bytes", (PyCFunction)(void (*)(void))pp_io_recv_bytes, METH_FASTCALL,
     "recv_bytes(fd, buf) -> bytes or -errno"},
    {"head_lines", (PyCFunction)(void (*)(void))pp_io_head_lines, METH_FASTCALL,
     "head_lines(buf, start, end, parts, last) -> (r, lines or None)"},
    {NULL, NULL, 0, NULL},
};
#endif

int pp_cpy_io_install(intptr_t addr) {
#ifdef PYPY_VERSION
    (void)addr;
    return -1;
#else
    int r = 0;
    PyGILState_STATE st = PyGILState_Ensure();  /* cffi calls run without the GIL */
    PyObject *d = (PyObject *)addr;
    if (pp_empty_args == NULL) pp_empty_args = PyTuple_New(0);  /* kept for the process */
    if (!PyDict_Check(d) || pp_empty_args == NULL) {
        PyErr_Clear();
        r = -1;
    } else {
        for (PyMethodDef *m = pp_io_methods; m->ml_name != NULL; m++) {
            PyObject *f = PyCFunction_NewEx(m, NULL, NULL);
            if (f == NULL || PyDict_SetItemString(d, m->ml_name, f) < 0) {
                Py_XDECREF(f);
                PyErr_Clear();
                r = -1;
                break;
            }
            Py_DECREF(f);
        }
    }
    PyGILState_Release(st);
    return r;
#endif
}
