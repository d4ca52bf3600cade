/* CPython-only: turn off the cyclic GC for the instances of one heap type.

   Why: the timer wheel holds one ``powpow.timers.Timer`` per pending timer
   (a million on a server with a million keep-alive connections).  Every full
   collection of CPython's cyclic GC walks each of them; while they are being
   created that is several walks of the whole set, and the cost per timer grows
   with the number pending (issue 13: 1.7x from 10k to 1M).  A Timer's slots
   are plain data plus the callback, so it needs no cycle detection of its own
   as long as the cycles through it are broken by hand (the loop drops the
   callback of a timer that fired or was cancelled: see powpow/timers.py).

   pp_gc_untrack_type(addr): ``addr`` is ``id(cls)`` of a class that derives
   directly from ``object`` and has ``__slots__`` without ``__dict__`` or
   ``__weakref__``, and no instance exists yet.  It clears HAVE_GC, so new
   instances are allocated without the GC header and never tracked, and it
   installs a deallocator that releases the slots (CPython's own deallocator
   skips that for non-GC heap types, which cannot normally have slots).
   Returns 0, or -1 when the class does not qualify or this is not CPython.

   This file uses the full (non-limited) C API for the type fields; the fields
   touched (tp_flags, tp_dealloc, tp_free, tp_members, ob_size of a heap type)
   have had the same meaning since CPython 3.0, and powpow/timers.py applies it
   only on the CPython versions it was tested with and checks the result. */
#ifdef Py_LIMITED_API
#  undef Py_LIMITED_API
#endif
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

int pp_gc_untrack_type(intptr_t addr);

#ifndef PYPY_VERSION
static void pp_nogc_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyMemberDef *mp = tp->tp_members;
    Py_ssize_t n = Py_SIZE(tp);
    for (Py_ssize_t i = 0; i < n; i++, mp++) {
        if (mp->type == T_OBJECT_EX && !(mp->flags & READONLY)) {
            PyObject **slot = (PyObject **)((char *)self + mp->offset);
            PyObject *obj = *slot;
            if (obj != NULL) {
                *slot = NULL;
                Py_DECREF(obj);
            }
        }
    }
    tp->tp_free(self);
    Py_DECREF(tp);  /* instances of a heap type own a reference to it */
}
#endif

int pp_gc_untrack_type(intptr_t addr) {
#ifdef PYPY_VERSION
    (void)addr;
    return -1;
#else
    int r = -1;
    PyGILState_STATE st = PyGILState_Ensure();  /* cffi calls run without the GIL */
    PyObject *o = (PyObject *)addr;
    if (PyType_Check(o)) {
        PyTypeObject *t = (PyTypeObject *)o;
        if ((t->tp_flags & Py_TPFLAGS_HEAPTYPE) && (t->tp_flags & Py_TPFLAGS_HAVE_GC)
                && t->tp_base == &PyBaseObject_Type && t->tp_dictoffset == 0
                && t->tp_weaklistoffset == 0 && t->tp_itemsize == 0
                && t->tp_finalize == NULL && t->tp_del == NULL
                && t->tp_members != NULL && Py_SIZE(t) > 0) {
            t->tp_flags &= ~Py_TPFLAGS_HAVE_GC;
            t->tp_free = PyObject_Free;
            t->tp_dealloc = pp_nogc_dealloc;
            PyType_Modified(t);
            r = 0;
        }
    }
    PyGILState_Release(st);
    return r;
#endif
}
