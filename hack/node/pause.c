/*
 * oomsight-pause: the first process of every Pod sandbox on the `hack/envtest up --node` node.
 *
 * A sandbox needs a process that holds the Pod's namespaces open and does nothing else: it sleeps
 * until a signal arrives, reaps any child that is re-parented to it (it is PID 1 of the Pod's PID
 * namespace when the Pod shares one), and exits 0 on SIGINT or SIGTERM, which is how the runtime
 * stops a sandbox. Written for this project; built static so the image needs nothing else:
 *   gcc -static -Os -o pause pause.c
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void request_stop(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static void reap_children(int signo)
{
    int saved = errno;
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int install(int signo, void (*handler)(int), int flags)
{
    struct sigaction action = {0};
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}

int main(void)
{
    if (install(SIGINT, request_stop, 0) != 0 || install(SIGTERM, request_stop, 0) != 0 ||
        install(SIGCHLD, reap_children, SA_NOCLDSTOP | SA_RESTART) != 0) {
        return 1;
    }
    while (!stop_requested) {
        pause();
    }
    return 0;
}
