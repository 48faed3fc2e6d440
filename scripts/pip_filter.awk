# Filter for pip's output in scripts/install.sh: drops known noise, keeps everything else (errors too).
#  * pip's "WARNING: Location ..." / "... is ignored" lines;
#  * setuptools' deprecation warning blocks, which pip prints while building an editable install:
#    a "...Warning: ..." line, a body fenced by lines that are just "!!", then the indented source
#    line of the warning call.
/^[[:space:]]*!![[:space:]]*$/ { fenced = !fenced; after = !fenced; next }
fenced { next }
after && /^[[:space:]]+/ { after = 0; next }
{ after = 0 }
/BuildBackendWarning|SetuptoolsDeprecationWarning|[A-Za-z]+Warning: .*(deprecated|setuptools)|^[[:space:]]*warnings\.warn\(/ { next }
/^WARNING: Location|is ignored/ { next }
{ print }
