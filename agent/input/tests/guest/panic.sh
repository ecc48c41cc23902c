# The panic hook releases a held key and destroys the devices.
P=/etc/shoulder/input-probe
$P inject-demo --linger-ms 1500 --pause-ms 100 --panic 2>&1
echo "T: probe exit $?"
