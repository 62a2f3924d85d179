# Forks until the sandbox refuses (OSError), catches that, cleans up and exits 0: a limit the
# program caught, which trawl must still see (issue 32).
import os
import signal

kids = []
try:
    while len(kids) < 10000:
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        kids.append(pid)
except OSError:
    pass
for k in kids:
    os.kill(k, signal.SIGKILL)
    os.waitpid(k, 0)
print("caught after", len(kids), "processes")
