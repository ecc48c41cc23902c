# Hot-plugged devices are found and their removal noticed; ours are ignored.
P=/etc/shoulder/input-probe
$P watch --seconds 40 --screen 1280x800 2>&1 &
sleep 2
$P inject-demo --linger-ms 500 --pause-ms 100 >/dev/null 2>&1
echo "T: hotplug"
wait
echo "T: end"
