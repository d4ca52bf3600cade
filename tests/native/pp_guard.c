/* Test-only helper (never in the shipped module): n bytes that end exactly
   where a PROT_NONE page begins, so any read past the end faults at once. */
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

char *pp_guarded_alloc(size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (n + (size_t)page - 1) / (size_t)page + 1;
    char *base = mmap(NULL, pages * (size_t)page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return NULL;
    if (mprotect(base + (pages - 1) * (size_t)page, (size_t)page, PROT_NONE) != 0) {
        munmap(base, pages * (size_t)page);
        return NULL;
    }
    return base + (pages - 1) * (size_t)page - n;
}

void pp_guarded_free(char *p, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (n + (size_t)page - 1) / (size_t)page + 1;
    char *base = p + n - (pages - 1) * (size_t)page;
    munmap(base, pages * (size_t)page);
}
