set terminal pngcairo size 900,560 noenhanced
set output 'docs/replay/ttft_p90_vs_load_no_kvstore.png'
set title 'TTFT p90 vs load: 4 workers (G 800 + H 4096 blocks each), no kvstore'
set xlabel 'load (trace time compressed x)'
set ylabel 'TTFT p90 (s)'
set logscale xy
set grid
set key top left
set xtics (1,1.5,2,3,4,8,16)
set xrange [0.9:17.6]
plot 'docs/replay/ttft_p90_vs_load_no_kvstore.png.dat' using 1:2 with linespoints lw 2 title 'round-robin', 'docs/replay/ttft_p90_vs_load_no_kvstore.png.dat' using 1:3 with linespoints lw 2 title 'least-loaded', 'docs/replay/ttft_p90_vs_load_no_kvstore.png.dat' using 1:4 with linespoints lw 2 title 'cache-aware'
