# Injection through uinput, pointer then touch mode; raw events dumped.
P=/etc/shoulder/input-probe
dump_all() { # $1: prefix
    (sleep 0.8; for n in 3 4 5; do $P dump /dev/input/event$n --seconds 5 >/tmp/$1$n 2>&1 & done) &
}
dump_all d
$P inject-demo --linger-ms 1500 --pause-ms 300 --hold-key --at 100,50 2>&1
sleep 5
for n in 3 4 5; do echo "== event$n"; cat /tmp/d$n; done
dump_all e
$P inject-demo --touch --linger-ms 1500 --pause-ms 300 --hold-key --screen 800x600 --at 100,50 2>&1
sleep 5
for n in 3 4 5; do echo "== event$n"; cat /tmp/e$n; done
echo "T: end"
