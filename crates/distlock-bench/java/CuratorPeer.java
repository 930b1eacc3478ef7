// Apache Curator's InterProcessMutex speaking distlock-bench's peer protocol
// (crates/distlock-bench/src/peers.rs), compiled by the bench with javac at run time:
//
//   java CuratorPeer --version V --url zk://host:port[,host:port...]/ cycle --name N --warmup W --iterations I
//   java CuratorPeer --version V --url zk://host:port[,host:port...]/ contend --name N --hold-us H --duration-ms MS
//
// The lock lives at /distlock-bench-curator/<N>. acquire() waits without bound on a watch of
// the predecessor, as Curator does by default. Times are System.nanoTime(), which is
// CLOCK_MONOTONIC on Linux, like the other peers'.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.LockSupport;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.RetryForever;

public class CuratorPeer {
    public static void main(String[] args) throws Exception {
        Map<String, String> options = new HashMap<>();
        String mode = null;
        for (int i = 0; i < args.length; i++) {
            if (args[i].startsWith("--")) {
                options.put(args[i].substring(2), args[++i]);
            } else {
                mode = args[i];
            }
        }
        URI url = new URI(options.get("url"));
        CuratorFramework client = CuratorFrameworkFactory.builder()
            // host:port[,host:port...]: the URL's authority is a connect string.
            .connectString(url.getRawAuthority())
            .sessionTimeoutMs(30000)
            .connectionTimeoutMs(10000)
            // Retries forever, like every peer in the bench.
            .retryPolicy(new RetryForever(100))
            .build();
        client.start();
        client.blockUntilConnected();
        InterProcessMutex lock =
            new InterProcessMutex(client, "/distlock-bench-curator/" + options.get("name"));
        StringBuilder out = new StringBuilder("{\"lib\":\"curator\",\"version\":\"")
            .append(options.get("version")).append("\",");
        if ("cycle".equals(mode)) {
            int warmup = Integer.parseInt(options.get("warmup"));
            int iterations = Integer.parseInt(options.get("iterations"));
            for (int i = 0; i < warmup; i++) {
                lock.acquire();
                lock.release();
            }
            long[] samples = new long[iterations];
            for (int i = 0; i < iterations; i++) {
                long started = System.nanoTime();
                lock.acquire();
                lock.release();
                samples[i] = System.nanoTime() - started;
            }
            out.append("\"samples\":[");
            for (int i = 0; i < iterations; i++) {
                out.append(i == 0 ? "" : ",").append(samples[i]);
            }
            out.append("]}");
        } else if ("contend".equals(mode)) {
            long holdNs = Long.parseLong(options.get("hold-us")) * 1000;
            long durationNs = Long.parseLong(options.get("duration-ms")) * 1_000_000;
            lock.acquire();
            lock.release();
            System.out.println("ready");
            System.out.flush();
            new BufferedReader(new InputStreamReader(System.in)).readLine();
            long stop = System.nanoTime() + durationNs;
            List<long[]> events = new ArrayList<>();
            while (System.nanoTime() < stop) {
                long requested = System.nanoTime();
                lock.acquire();
                long granted = System.nanoTime();
                if (holdNs > 0) {
                    LockSupport.parkNanos(holdNs);
                }
                long releasing = System.nanoTime();
                lock.release();
                events.add(new long[] {requested, granted, releasing, System.nanoTime()});
            }
            out.append("\"events\":[");
            for (int i = 0; i < events.size(); i++) {
                long[] e = events.get(i);
                out.append(i == 0 ? "[" : ",[").append(e[0]).append(',').append(e[1])
                    .append(',').append(e[2]).append(',').append(e[3]).append(']');
            }
            out.append("]}");
        } else {
            throw new IllegalArgumentException("mode must be cycle or contend, not " + mode);
        }
        System.out.println(out);
        System.out.flush();
        client.close();
        System.exit(0);
    }
}
