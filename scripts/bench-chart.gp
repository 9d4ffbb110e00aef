# bench-chart.gp - draws docs/bench-ratios.png for scripts/bench.sh: one bar
# per measure, the ratio rstunnel/stunnel4 (green where the goal is met, red
# where it is missed) and the goal as a black bar across it.
#
# Input (from bench.sh): datafile with rows `"label" ratio goal met(0|1)`.
# Usage: gnuplot -e "datafile='chart.dat'; outfile='ratios.png'" scripts/bench-chart.gp
if (!exists("datafile")) datafile = 'chart.dat'
if (!exists("outfile")) outfile = 'bench-ratios.png'

set terminal pngcairo size 1200,620 font "sans,10" noenhanced
set output outfile
set title "rstunnel / stunnel4 (median ratio): bar = measured, black line = goal; green = goal met, red = missed"
set style fill solid 0.75 border -1
set boxwidth 0.6
set ylabel "ratio rstunnel / stunnel4"
# Log scale: 2x better and 2x worse are the same distance from parity, and
# one far outlier does not flatten the rest.
set logscale y 2
set yrange [0.125:32]
set ytics ("1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16, "32" 32)
set grid ytics
set xtics rotate by -35 left nomirror
set key off
set bmargin 9
set rmargin 14
# The 1.0 line: parity with stunnel4.
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lc rgb "#777777"

# Ratios outside 1/8..16 are clamped to it (the label keeps the real value);
# a missing ratio (0) is drawn as the axis floor.
clamp(r) = r < 0.125 ? 0.125 : (r > 16 ? 16 : r)
set boxwidth 0.6 absolute
plot datafile using 0:(clamp($2)):($4 > 0 ? 0x2ca02c : 0xd62728):xtic(1) with boxes lc rgb variable, \
     '' using ($0 - 0.4):3:(0.8):(0) with vectors nohead lw 3 lc rgb "black", \
     '' using 0:(clamp($2)):(sprintf("%.2f", $2)) with labels offset 0,0.8
