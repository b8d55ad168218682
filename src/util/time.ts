const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function pad(n: number, w = 2): string {
  return String(n).padStart(w, "0");
}

/**
 * Formats a time as Go's time.RubyDate in local time, as Convoy writes every CreatedTime, or in
 * UTC (`opts.utc`, as Convoy prints times AWS gives).
 * @example rubyDate(new Date()) // "Mon Jan 02 15:04:05 -0700 2006"
 */
export function rubyDate(d: Date = new Date(), opts: { utc?: boolean } = {}): string {
  const u = opts.utc;
  const [day, month, date, h, m, sec, year] = u
    ? [
      d.getUTCDay(),
      d.getUTCMonth(),
      d.getUTCDate(),
      d.getUTCHours(),
      d.getUTCMinutes(),
      d.getUTCSeconds(),
      d.getUTCFullYear(),
    ]
    : [
      d.getDay(),
      d.getMonth(),
      d.getDate(),
      d.getHours(),
      d.getMinutes(),
      d.getSeconds(),
      d.getFullYear(),
    ];
  const off = u ? 0 : -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const a = Math.abs(off);
  return `${DAYS[day]} ${MONTHS[month]} ${pad(date)} ${pad(h)}:${pad(m)}:${pad(sec)} ${sign}${
    pad(Math.floor(a / 60))
  }${pad(a % 60)} ${year}`;
}
